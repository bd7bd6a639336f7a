// Package app is the ABCI application of the CometBFT side-by-side bench: it verifies each
// transaction's Ed25519 signature (ZIP-215 rules, batched per block as Pantheon's
// validators do) and keeps per-key nonces (each key's nonces run 0, 1, 2, ... without gaps,
// as Pantheon's). Like the Cosmos SDK's check state, CheckTx admits a key's transactions
// into the mempool only in nonce order, so that a proposer's block holds them in order
// although gossip may deliver them out of order (a transaction refused for that reason is
// accepted when another peer sends it again after its predecessor). CometBFT runs CheckTx
// for several peers at once and appends to the mempool after the app answers, so the
// mempool's order can still differ from the app's: PrepareProposal puts each key's
// transactions back in nonce order and leaves out any that would open a gap (they stay in
// the mempool for a later block).
package app

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"sort"
	"sync"

	abci "github.com/cometbft/cometbft/abci/types"
	cmted25519 "github.com/cometbft/cometbft/crypto/ed25519"

	"pantheon/bench/comet/txs"
)

// Result codes of a transaction.
const (
	CodeOK uint32 = iota
	CodeMalformed
	CodeBadSignature
	CodeBadNonce
)

// App holds the committed nonces and the nonces of the block being finalized.
type App struct {
	abci.BaseApplication
	// CheckTxVerifies makes CheckTx verify the signature too (then every validator verifies
	// each transaction twice: on entering its mempool and in FinalizeBlock).
	CheckTxVerifies bool

	mu        sync.Mutex
	committed map[string]uint64 // key -> next nonce
	pending   map[string]uint64 // the block being finalized
	checked   map[string]uint64 // key -> next nonce after the mempool's (if above committed)
	height    int64
	appHash   []byte
	txCount   uint64
}

func New(checkTxVerifies bool) *App {
	return &App{
		CheckTxVerifies: checkTxVerifies,
		committed:       map[string]uint64{},
		checked:         map[string]uint64{},
		appHash:         make([]byte, 32),
	}
}

func (a *App) Info(context.Context, *abci.RequestInfo) (*abci.ResponseInfo, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return &abci.ResponseInfo{LastBlockHeight: a.height, LastBlockAppHash: a.appHash}, nil
}

// CheckTx admits a well-formed transaction whose nonce is its key's next one after the
// committed state and the mempool (and, with CheckTxVerifies, whose signature is valid).
// A recheck keeps what the mempool holds above the committed nonce: the mempool's nonces
// of a key stay one unbroken run even if a recheck times out half way.
func (a *App) CheckTx(_ context.Context, req *abci.RequestCheckTx) (*abci.ResponseCheckTx, error) {
	tx, err := txs.Parse(req.Tx)
	if err != nil {
		return &abci.ResponseCheckTx{Code: CodeMalformed}, nil
	}
	key := string(tx.PubKey)
	a.mu.Lock()
	defer a.mu.Unlock()
	committed := a.committed[key]
	next := max(a.checked[key], committed)
	switch {
	case tx.Nonce < committed:
		return &abci.ResponseCheckTx{Code: CodeBadNonce}, nil
	case tx.Nonce < next && req.Type == abci.CheckTxType_Recheck:
		return &abci.ResponseCheckTx{Code: CodeOK}, nil
	case tx.Nonce != next:
		return &abci.ResponseCheckTx{Code: CodeBadNonce}, nil
	}
	if a.CheckTxVerifies && !cmted25519.PubKey(tx.PubKey).VerifySignature(tx.Signed, tx.Signature) {
		return &abci.ResponseCheckTx{Code: CodeBadSignature}, nil
	}
	a.checked[key] = next + 1
	return &abci.ResponseCheckTx{Code: CodeOK}, nil
}

// PrepareProposal orders each key's transactions by nonce and keeps, per key, the unbroken
// run that starts at the committed nonce; the others stay in the mempool.
func (a *App) PrepareProposal(_ context.Context, req *abci.RequestPrepareProposal) (*abci.ResponsePrepareProposal, error) {
	type entry struct {
		nonce uint64
		raw   []byte
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	byKey := map[string][]entry{}
	var order []string
	for _, raw := range req.Txs {
		tx, err := txs.Parse(raw)
		if err != nil {
			continue
		}
		key := string(tx.PubKey)
		if _, ok := byKey[key]; !ok {
			order = append(order, key)
		}
		byKey[key] = append(byKey[key], entry{tx.Nonce, raw})
	}
	out := make([][]byte, 0, len(req.Txs))
	for _, key := range order {
		run := byKey[key]
		sort.SliceStable(run, func(i, j int) bool { return run[i].nonce < run[j].nonce })
		next := a.committed[key]
		for _, e := range run {
			if e.nonce == next {
				out = append(out, e.raw)
				next++
			}
		}
	}
	return &abci.ResponsePrepareProposal{Txs: out}, nil
}

// FinalizeBlock verifies the block's signatures as one batch (each alone if the batch
// fails) and applies the nonces in order.
func (a *App) FinalizeBlock(_ context.Context, req *abci.RequestFinalizeBlock) (*abci.ResponseFinalizeBlock, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	valid := verifyAll(req.Txs)
	a.pending = map[string]uint64{}
	results := make([]*abci.ExecTxResult, len(req.Txs))
	for i, raw := range req.Txs {
		results[i] = &abci.ExecTxResult{Code: a.apply(raw, valid[i])}
	}
	a.height = req.Height
	a.txCount += uint64(len(req.Txs))
	h := sha256.New()
	h.Write(a.appHash)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], a.txCount)
	h.Write(n[:])
	for _, r := range results {
		h.Write([]byte{byte(r.Code)})
	}
	a.appHash = h.Sum(nil)
	return &abci.ResponseFinalizeBlock{TxResults: results, AppHash: a.appHash}, nil
}

func (a *App) apply(raw []byte, valid bool) uint32 {
	tx, err := txs.Parse(raw)
	if err != nil {
		return CodeMalformed
	}
	if !valid {
		return CodeBadSignature
	}
	key := string(tx.PubKey)
	next, ok := a.pending[key]
	if !ok {
		next = a.committed[key]
	}
	if tx.Nonce != next {
		return CodeBadNonce
	}
	a.pending[key] = next + 1
	return CodeOK
}

func (a *App) Commit(context.Context, *abci.RequestCommit) (*abci.ResponseCommit, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, v := range a.pending {
		a.committed[k] = v
	}
	a.pending = nil
	return &abci.ResponseCommit{}, nil
}

// verifyAll says which transactions carry a valid signature.
func verifyAll(raws [][]byte) []bool {
	valid := make([]bool, len(raws))
	batch := cmted25519.NewBatchVerifier()
	var idx []int
	for i, raw := range raws {
		tx, err := txs.Parse(raw)
		if err != nil {
			continue
		}
		if batch.Add(cmted25519.PubKey(tx.PubKey), tx.Signed, tx.Signature) == nil {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return valid
	}
	ok, each := batch.Verify()
	for j, i := range idx {
		valid[i] = ok || each[j]
	}
	return valid
}
