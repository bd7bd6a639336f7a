package app

import (
	"context"
	"crypto/ed25519"
	"testing"

	abci "github.com/cometbft/cometbft/abci/types"

	"pantheon/bench/comet/txs"
)

func key(b byte) ed25519.PrivateKey {
	seed := make([]byte, 32)
	seed[0] = b
	return ed25519.NewKeyFromSeed(seed)
}

func check(t *testing.T, a *App, raw []byte, kind abci.CheckTxType) uint32 {
	t.Helper()
	res, err := a.CheckTx(context.Background(), &abci.RequestCheckTx{Tx: raw, Type: kind})
	if err != nil {
		t.Fatal(err)
	}
	return res.Code
}

func finalize(t *testing.T, a *App, height int64, raws ...[]byte) []uint32 {
	t.Helper()
	res, err := a.FinalizeBlock(context.Background(), &abci.RequestFinalizeBlock{Height: height, Txs: raws})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Commit(context.Background(), &abci.RequestCommit{}); err != nil {
		t.Fatal(err)
	}
	codes := make([]uint32, len(res.TxResults))
	for i, r := range res.TxResults {
		codes[i] = r.Code
	}
	return codes
}

func TestCheckTxAdmitsEachKeyInNonceOrder(t *testing.T) {
	a, k := New(false), key(1)
	if c := check(t, a, txs.Sign(k, 1, 0), abci.CheckTxType_New); c != CodeBadNonce {
		t.Fatalf("nonce 1 before 0: code %d", c)
	}
	for n := uint64(0); n < 3; n++ {
		if c := check(t, a, txs.Sign(k, n, 0), abci.CheckTxType_New); c != CodeOK {
			t.Fatalf("nonce %d: code %d", n, c)
		}
	}
	if c := check(t, a, txs.Sign(k, 1, 9), abci.CheckTxType_New); c != CodeBadNonce {
		t.Fatalf("a second nonce 1: code %d", c)
	}
	if c := check(t, a, txs.Sign(key(2), 0, 0), abci.CheckTxType_New); c != CodeOK {
		t.Fatalf("another key's nonce 0: code %d", c)
	}
	if c := check(t, a, []byte("short"), abci.CheckTxType_New); c != CodeMalformed {
		t.Fatalf("short tx: code %d", c)
	}
}

func TestRecheckKeepsTheMempoolsRunAfterACommit(t *testing.T) {
	a, k := New(false), key(1)
	raws := [][]byte{txs.Sign(k, 0, 0), txs.Sign(k, 1, 0), txs.Sign(k, 2, 0)}
	for _, raw := range raws {
		check(t, a, raw, abci.CheckTxType_New)
	}
	if codes := finalize(t, a, 1, raws[0]); codes[0] != CodeOK {
		t.Fatalf("block: %v", codes)
	}
	// a recheck that stops after nonce 1 must not lose nonce 3 from a client
	if c := check(t, a, raws[1], abci.CheckTxType_Recheck); c != CodeOK {
		t.Fatalf("recheck nonce 1: code %d", c)
	}
	if c := check(t, a, txs.Sign(k, 3, 0), abci.CheckTxType_New); c != CodeOK {
		t.Fatalf("nonce 3 after the commit: code %d", c)
	}
	if c := check(t, a, raws[0], abci.CheckTxType_Recheck); c != CodeBadNonce {
		t.Fatalf("committed nonce 0 rechecked: code %d", c)
	}
}

func TestCheckTxVerifiesOnlyWhenAsked(t *testing.T) {
	forged := txs.Sign(key(1), 0, 0)
	forged[txs.Size-1] ^= 1
	if c := check(t, New(false), forged, abci.CheckTxType_New); c != CodeOK {
		t.Fatalf("without verification: code %d", c)
	}
	if c := check(t, New(true), forged, abci.CheckTxType_New); c != CodeBadSignature {
		t.Fatalf("with verification: code %d", c)
	}
}

func TestFinalizeBlockVerifiesAndAppliesNoncesInOrder(t *testing.T) {
	a, k := New(false), key(1)
	forged := txs.Sign(k, 1, 0)
	forged[50] ^= 1 // payload changed after signing
	codes := finalize(t, a, 1,
		txs.Sign(k, 0, 0), // ok
		forged,            // bad signature: nonce 1 stays unused
		txs.Sign(k, 2, 0), // gap
		txs.Sign(k, 1, 0), // ok
		txs.Sign(k, 1, 7), // nonce used in this block
		[]byte("short"),
	)
	want := []uint32{CodeOK, CodeBadSignature, CodeBadNonce, CodeOK, CodeBadNonce, CodeMalformed}
	for i := range want {
		if codes[i] != want[i] {
			t.Fatalf("codes %v, want %v", codes, want)
		}
	}
	if codes := finalize(t, a, 2, txs.Sign(k, 1, 3), txs.Sign(k, 2, 0)); codes[0] != CodeBadNonce || codes[1] != CodeOK {
		t.Fatalf("next block: %v", codes)
	}
}

func TestPrepareProposalOrdersEachKeyAndLeavesGapsOut(t *testing.T) {
	a, k, other := New(false), key(1), key(2)
	finalize(t, a, 1, txs.Sign(k, 0, 0))
	in := [][]byte{
		txs.Sign(k, 2, 0), txs.Sign(other, 0, 0), txs.Sign(k, 1, 0),
		txs.Sign(k, 4, 0), []byte("short"), txs.Sign(other, 2, 0),
	}
	res, err := a.PrepareProposal(context.Background(), &abci.RequestPrepareProposal{Txs: in})
	if err != nil {
		t.Fatal(err)
	}
	want := [][]byte{in[2], in[0], in[1]} // k: 1, 2 (4 waits for 3); other: 0 (2 waits for 1)
	if len(res.Txs) != len(want) {
		t.Fatalf("%d txs, want %d", len(res.Txs), len(want))
	}
	for i := range want {
		if string(res.Txs[i]) != string(want[i]) {
			t.Fatalf("tx %d differs", i)
		}
	}
	if codes := finalize(t, a, 2, res.Txs...); codes[0]+codes[1]+codes[2] != CodeOK {
		t.Fatalf("the proposal does not finalize cleanly: %v", codes)
	}
}
