// Command cometload drives the bench's CometBFT localnet: it pre-signs transactions, sends
// a warm-up, a burst (throughput: burst size / time from the first send to the block that
// finalizes the last transaction) and a run paced at half the burst's rate (latency: from
// each send to the NewBlock event of the block that holds it, seen on the first node), and
// prints one JSON object with the figures.
package main

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	cmted25519 "github.com/cometbft/cometbft/crypto/ed25519"
	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	cmttypes "github.com/cometbft/cometbft/types"

	"pantheon/bench/comet/txs"
)

type seen struct {
	at   time.Time
	code uint32
}

// watcher records when each transaction first appears in a finalized block.
type watcher struct {
	mu     sync.Mutex
	seen   map[string]seen
	blocks int
	txs    int
}

func (w *watcher) record(ev cmttypes.EventDataNewBlock) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.blocks++
	w.txs += len(ev.Block.Txs)
	for i, raw := range ev.Block.Txs {
		if len(raw) != txs.Size {
			continue
		}
		var code uint32
		if i < len(ev.ResultFinalizeBlock.TxResults) {
			code = ev.ResultFinalizeBlock.TxResults[i].Code
		}
		if _, ok := w.seen[txs.ID(raw)]; !ok {
			w.seen[txs.ID(raw)] = seen{now, code}
		}
	}
}

// firstMissing names up to n transactions of batch not yet seen, as key index : nonce.
func (w *watcher) firstMissing(batch [][]byte, n int) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, raw := range batch {
		if _, ok := w.seen[txs.ID(raw)]; !ok && len(out) < n {
			out = append(out, fmt.Sprintf("%x:%d", raw[:2], binary.BigEndian.Uint64(raw[32:40])))
		}
	}
	return strings.Join(out, " ")
}

// waitFor waits until every tx of ids has been seen or the timeout passes; it returns the
// latest time one of them was seen.
func (w *watcher) waitFor(ids []string, timeout time.Duration) (time.Time, int) {
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		var last time.Time
		missing := 0
		for _, id := range ids {
			s, ok := w.seen[id]
			if !ok {
				missing++
			} else if s.at.After(last) {
				last = s.at
			}
		}
		w.mu.Unlock()
		if missing == 0 || time.Now().After(deadline) {
			return last, missing
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// send sends the txs of batch, each key's in order through its own client (one
// connection to the key's node), at rate per second overall (0: at once), recording each
// send time in sent.
func send(clients []*rpchttp.HTTP, batch [][]byte, clientOf func(raw []byte) int, rate float64, sent []time.Time) error {
	began := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(clients))
	for n := range clients {
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			ctx := context.Background()
			for i, raw := range batch {
				if clientOf(raw) != n {
					continue
				}
				if rate > 0 {
					if d := time.Until(began.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
						time.Sleep(d)
					}
				}
				sent[i] = time.Now()
				if _, err := clients[n].BroadcastTxAsync(ctx, raw); err != nil {
					errs[n] = fmt.Errorf("sender %d: %w", n, err)
					return
				}
			}
		}(n)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func cpuSeconds(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndex(s, ")")+1:])
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100 // USER_HZ is 100 on Linux
}

func cpu(pids []int) (validators, self float64) {
	for _, p := range pids {
		validators += cpuSeconds(p)
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	return
}

func percentile(values []float64, p float64) float64 {
	if len(values) == 0 {
		return 0
	}
	sorted := append([]float64(nil), values...)
	sort.Float64s(sorted)
	i := int(p / 100 * float64(len(sorted)))
	if i > len(sorted)-1 {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func verifyRate(seconds float64) float64 {
	key := ed25519.NewKeyFromSeed(make([]byte, 32))
	raw := txs.Sign(key, 0, 1)
	tx, _ := txs.Parse(raw)
	pub := cmted25519.PubKey(tx.PubKey)
	count, began := 0, time.Now()
	for time.Since(began).Seconds() < seconds {
		for j := 0; j < 200; j++ {
			if !pub.VerifySignature(tx.Signed, tx.Signature) {
				panic("bad signature")
			}
		}
		count += 200
	}
	return float64(count) / time.Since(began).Seconds()
}

func main() {
	rpcs := flag.String("rpc", "", "comma-separated RPC addresses of the nodes, tcp://127.0.0.1:PORT")
	pidList := flag.String("pids", "", "comma-separated pids of the node processes (CPU split)")
	burst := flag.Int("txs", 8000, "burst size")
	warmup := flag.Int("warmup", 1000, "transactions first, not measured")
	nKeys := flag.Int("keys", 16, "signing keys, each with its own sender and connection to "+
		"node key % nodes, nonces in order")
	timeout := flag.Duration("timeout", 300*time.Second, "longest wait for a phase to finalize")
	flag.Parse()
	if err := run(strings.Split(*rpcs, ","), *pidList, *burst, *warmup, *nKeys, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "cometload:", err)
		os.Exit(1)
	}
}

func run(addrs []string, pidList string, burst, warmup, nKeys int, timeout time.Duration) error {
	var pids []int
	for _, p := range strings.Split(pidList, ",") {
		if p == "" {
			continue
		}
		pid, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("bad pid %q", p)
		}
		pids = append(pids, pid)
	}
	ws, err := rpchttp.New(addrs[0], "/websocket")
	if err != nil {
		return err
	}
	rate := verifyRate(2)

	// pre-sign: key k signs its nonces 0, 1, 2, ... in send order and sends them through
	// its own client to node k % nodes
	keys := make([]ed25519.PrivateKey, nKeys)
	clients := make([]*rpchttp.HTTP, nKeys)
	sender := map[string]int{}
	for k := range keys {
		seed := make([]byte, 32)
		binary.BigEndian.PutUint64(seed, uint64(k+1))
		keys[k] = ed25519.NewKeyFromSeed(seed)
		sender[string(keys[k].Public().(ed25519.PublicKey))] = k
		c, err := rpchttp.New(addrs[k%len(addrs)], "/websocket")
		if err != nil {
			return err
		}
		clients[k] = c
	}
	paced := burst / 4
	all := make([][]byte, warmup+burst+paced)
	for i := range all {
		all[i] = txs.Sign(keys[i%nKeys], uint64(i/nKeys), byte(i))
	}
	clientOf := func(raw []byte) int { return sender[string(raw[:32])] }
	ids := func(batch [][]byte) []string {
		out := make([]string, len(batch))
		for i, raw := range batch {
			out[i] = txs.ID(raw)
		}
		return out
	}

	if err := ws.Start(); err != nil {
		return fmt.Errorf("websocket: %w", err)
	}
	defer func() { _ = ws.Stop() }()
	events, err := ws.Subscribe(context.Background(), "cometload", "tm.event='NewBlock'", 1000)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	w := &watcher{seen: map[string]seen{}}
	go func() {
		for ev := range events {
			if nb, ok := ev.Data.(cmttypes.EventDataNewBlock); ok {
				w.record(nb)
			}
		}
	}()

	sent := make([]time.Time, len(all))
	if warmup > 0 {
		if err := send(clients, all[:warmup], clientOf, 0, sent[:warmup]); err != nil {
			return err
		}
		if _, missing := w.waitFor(ids(all[:warmup]), timeout); missing > 0 {
			return fmt.Errorf("warm-up: %d of %d transactions not finalized", missing, warmup)
		}
	}

	burstTxs := all[warmup : warmup+burst]
	vBefore, sBefore := cpu(pids)
	w.mu.Lock()
	blocksBefore, txsBefore := w.blocks, w.txs
	w.mu.Unlock()
	began := time.Now()
	if err := send(clients, burstTxs, clientOf, 0, sent[warmup:warmup+burst]); err != nil {
		return err
	}
	sendWall := time.Since(began).Seconds()
	last, missing := w.waitFor(ids(burstTxs), timeout)
	if missing > 0 {
		return fmt.Errorf("burst: %d of %d transactions not finalized in %s; first missing (key, nonce): %s",
			missing, burst, timeout, w.firstMissing(burstTxs, 8))
	}
	vAfter, sAfter := cpu(pids)
	w.mu.Lock()
	blocks, blockTxs := w.blocks-blocksBefore, w.txs-txsBefore
	w.mu.Unlock()
	wall := last.Sub(began).Seconds()
	throughput := float64(burst) / wall

	pacedTxs := all[warmup+burst:]
	pacedSent := sent[warmup+burst:]
	w.mu.Lock()
	pacedBlocksBefore := w.blocks
	w.mu.Unlock()
	pacedBegan := time.Now()
	if err := send(clients, pacedTxs, clientOf, throughput/2, pacedSent); err != nil {
		return err
	}
	pacedLast, missing := w.waitFor(ids(pacedTxs), timeout)
	if missing > 0 {
		return fmt.Errorf("paced: %d of %d transactions not finalized in %s", missing, paced, timeout)
	}
	w.mu.Lock()
	pacedBlocks := w.blocks - pacedBlocksBefore
	var lat []float64
	rejected := 0
	for i, raw := range all[warmup:] {
		s := w.seen[txs.ID(raw)]
		if s.code != 0 {
			rejected++
		}
		if i >= burst {
			lat = append(lat, s.at.Sub(pacedSent[i-burst]).Seconds())
		}
	}
	w.mu.Unlock()
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"verify_rate":    rate,
		"throughput":     throughput,
		"wall":           wall,
		"send_wall":      sendWall,
		"paced_rate":     throughput / 2,
		"p50":            percentile(lat, 50),
		"p99":            percentile(lat, 99),
		"finalized":      burst + paced - rejected,
		"rejected":       rejected,
		"blocks":         blocks,
		"paced_interval": pacedLast.Sub(pacedBegan).Seconds() / float64(max(pacedBlocks, 1)),
		"block_txs":      blockTxs,
		"cpu_validators": vAfter - vBefore,
		"cpu_loadgen":    sAfter - sBefore,
	})
}
