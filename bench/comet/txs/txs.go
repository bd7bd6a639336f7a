// Package txs is the benchmark's transaction: 200 bytes, signed with Ed25519.
//
// Layout: public key (32) | nonce, big-endian (8) | payload (96) | signature (64). The
// signature covers Domain || the first 136 bytes, as Pantheon's covers its TX_DOMAIN and
// the transaction body.
package txs

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
)

const (
	Size     = 200
	bodySize = 136
	Domain   = "pantheon/comet-bench/tx/v1\x00"
)

var ErrSize = errors.New("transaction is not 200 bytes")

// Tx is a parsed transaction: slices of the wire bytes.
type Tx struct {
	PubKey    []byte
	Nonce     uint64
	Signed    []byte // Domain || body: what the signature covers
	Signature []byte
}

// ID identifies a transaction: its public key and nonce.
func ID(raw []byte) string { return string(raw[:40]) }

// Sign builds the transaction of key with nonce; payload is repeated to fill 96 bytes.
func Sign(key ed25519.PrivateKey, nonce uint64, payload byte) []byte {
	raw := make([]byte, Size)
	copy(raw, key.Public().(ed25519.PublicKey))
	binary.BigEndian.PutUint64(raw[32:40], nonce)
	for i := 40; i < bodySize; i++ {
		raw[i] = payload
	}
	copy(raw[bodySize:], ed25519.Sign(key, signedBytes(raw)))
	return raw
}

// Parse splits raw into its parts without verifying anything.
func Parse(raw []byte) (Tx, error) {
	if len(raw) != Size {
		return Tx{}, ErrSize
	}
	return Tx{
		PubKey:    raw[:32],
		Nonce:     binary.BigEndian.Uint64(raw[32:40]),
		Signed:    signedBytes(raw),
		Signature: raw[bodySize:],
	}, nil
}

func signedBytes(raw []byte) []byte {
	return append([]byte(Domain), raw[:bodySize]...)
}
