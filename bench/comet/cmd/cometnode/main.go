// Command cometnode runs one CometBFT v0.38 validator with the bench's ABCI application in
// the same process, or writes a localnet's files:
//
//	cometnode testnet --v 4 --o DIR ...   (CometBFT's own `cometbft testnet`)
//	cometnode node --home DIR [--checktx-verify]
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/cometbft/cometbft/cmd/cometbft/commands"
	cfg "github.com/cometbft/cometbft/config"
	cmtflags "github.com/cometbft/cometbft/libs/cli/flags"
	cmtlog "github.com/cometbft/cometbft/libs/log"
	nm "github.com/cometbft/cometbft/node"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/proxy"
	"github.com/spf13/viper"

	"pantheon/bench/comet/app"
)

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: cometnode testnet|node ..."))
	}
	switch os.Args[1] {
	case "testnet":
		commands.TestnetFilesCmd.SetArgs(os.Args[2:])
		if err := commands.TestnetFilesCmd.Execute(); err != nil {
			fail(err)
		}
	case "node":
		fs := flag.NewFlagSet("node", flag.ExitOnError)
		home := fs.String("home", "", "the node's home directory")
		checkTx := fs.Bool("checktx-verify", false, "verify signatures in CheckTx too")
		_ = fs.Parse(os.Args[2:])
		if err := run(*home, *checkTx); err != nil {
			fail(err)
		}
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "cometnode:", err)
	os.Exit(1)
}

func run(home string, checkTxVerifies bool) error {
	config := cfg.DefaultConfig()
	config.SetRoot(home)
	viper.SetConfigFile(filepath.Join(home, "config", "config.toml"))
	if err := viper.ReadInConfig(); err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	if err := viper.Unmarshal(config); err != nil {
		return fmt.Errorf("decoding config: %w", err)
	}
	config.SetRoot(home)
	if err := config.ValidateBasic(); err != nil {
		return fmt.Errorf("invalid config: %w", err)
	}
	pv := privval.LoadFilePV(config.PrivValidatorKeyFile(), config.PrivValidatorStateFile())
	nodeKey, err := p2p.LoadNodeKey(config.NodeKeyFile())
	if err != nil {
		return fmt.Errorf("loading node key: %w", err)
	}
	logger := cmtlog.NewTMLogger(cmtlog.NewSyncWriter(os.Stdout))
	logger, err = cmtflags.ParseLogLevel(config.LogLevel, logger, cfg.DefaultLogLevel)
	if err != nil {
		return fmt.Errorf("log level: %w", err)
	}
	node, err := nm.NewNode(
		config, pv, nodeKey,
		proxy.NewLocalClientCreator(app.New(checkTxVerifies)),
		nm.DefaultGenesisDocProviderFunc(config),
		cfg.DefaultDBProvider,
		nm.DefaultMetricsProvider(config.Instrumentation),
		logger,
	)
	if err != nil {
		return fmt.Errorf("creating node: %w", err)
	}
	if err := node.Start(); err != nil {
		return fmt.Errorf("starting node: %w", err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
	if err := node.Stop(); err != nil {
		return err
	}
	node.Wait()
	return nil
}
