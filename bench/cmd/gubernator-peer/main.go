// Command gubernator-peer runs gubernator v2 (github.com/gubernator-io/gubernator)
// as a single in-memory node for the peer benchmark (bench/cmd/peers), in a
// process of its own so that its resident memory is its own.
//
// gubernator is a daemon library: its own binary reads GUBER_* variables,
// discovers peers by memberlist (a gossip port on every interface) and
// starts tracing. This main builds the same DaemonConfig by hand instead:
// GRPC and the HTTP gateway on 127.0.0.1 only, no peer discovery ("none":
// the node is told that it owns every key), gubernator's own defaults for
// everything else (cache of 50,000 limits, one worker per CPU, batching
// defaults; DaemonConfig does not set them, Config.SetDefaults does).
//
// It prints one line, "ready http=ADDR grpc=ADDR", once both listeners
// answer, and stops on SIGTERM or SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/gubernator-io/gubernator/v2"
	"github.com/sirupsen/logrus"
)

func main() {
	grpcAddr := flag.String("grpc", "", "GRPC listen address (default: a free 127.0.0.1 port)")
	httpAddr := flag.String("http", "127.0.0.1:0", "HTTP gateway listen address")
	flag.Parse()
	if err := run(*grpcAddr, *httpAddr); err != nil {
		fmt.Fprintln(os.Stderr, "gubernator-peer:", err)
		os.Exit(1)
	}
}

func run(grpcAddr, httpAddr string) error {
	if grpcAddr == "" {
		// The HTTP gateway dials the GRPC listen address as configured, so
		// it needs a real port, not :0.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		grpcAddr = ln.Addr().String()
		ln.Close()
	}
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	conf := gubernator.DaemonConfig{
		GRPCListenAddress: grpcAddr,
		HTTPListenAddress: httpAddr,
		AdvertiseAddress:  grpcAddr,
		PeerDiscoveryType: "none",
		Logger:            logrus.NewEntry(log),
	}
	ctx := context.Background()
	d, err := gubernator.SpawnDaemon(ctx, conf)
	if err != nil {
		return fmt.Errorf("spawn daemon: %w", err)
	}
	defer d.Close()
	// A single node: it owns every rate limit.
	d.SetPeers([]gubernator.PeerInfo{{GRPCAddress: grpcAddr, HTTPAddress: d.HTTPListener.Addr().String(), IsOwner: true}})
	fmt.Printf("ready http=%s grpc=%s\n", d.HTTPListener.Addr(), grpcAddr)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}
