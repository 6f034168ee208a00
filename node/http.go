package node

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// maxRequestBytes bounds every API request message (a leaf is at most
// 65,535 bytes).
const maxRequestBytes = 128 << 10

// startHTTP serves the Connect API (Connect, gRPC and gRPC-Web over
// HTTP/1.1 and h2c), the C2SP tlog-tiles read API, /healthz, /readyz and
// /metrics on the node's listener.
func (n *Node) startHTTP() {
	opts := []connect.HandlerOption{
		connect.WithReadMaxBytes(maxRequestBytes),
		// Leaves are mostly certificates, ciphertext and hashes: gzip
		// costs CPU and saves little, so only large responses are
		// compressed.
		connect.WithCompressMinBytes(64 << 10),
	}
	mux := http.NewServeMux()
	mux.Handle(chipledgerv1connect.NewLedgerServiceHandler(&ledgerService{n}, opts...))
	mux.Handle(chipledgerv1connect.NewAdminServiceHandler(&adminService{n}, opts...))
	mux.HandleFunc("GET /checkpoint", n.serveCheckpoint)
	mux.HandleFunc("GET /tile/", n.serveTile)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", n.serveReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics.registry, promhttp.HandlerOpts{}))

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	n.http = &http.Server{
		Handler:           mux,
		Protocols:         &protocols,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.http.Serve(n.listener); ignoreClosed(err) != nil {
			n.log.Error("API server stopped", "err", err)
		}
	}()
}

// serveCheckpoint serves the latest signed checkpoint (C2SP tlog-tiles).
func (n *Node) serveCheckpoint(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(n.fsm.checkpoint().Signed)
}

// serveTile serves hash tiles and entry bundles (C2SP tlog-tiles). Full
// tiles never change and may be cached forever; partial ones are replaced
// by the full tile later, so they are cached briefly.
func (n *Node) serveTile(w http.ResponseWriter, r *http.Request) {
	ref, err := ledger.ParseTilePath(strings.TrimPrefix(r.URL.Path, "/"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var data []byte
	err = n.fsm.withStore(func(s *ledger.Store) (err error) {
		data, err = s.ReadTile(ref)
		return err
	})
	switch {
	case errors.Is(err, ledger.ErrBeyondSize):
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	case err != nil:
		n.log.Error("read tile", "path", r.URL.Path, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if ref.Width == 256 {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "public, max-age=60")
	}
	w.Write(data)
}

// serveReady answers 200 when the node has a leader and has applied every
// entry it knows to be committed, 503 otherwise.
func (n *Node) serveReady(w http.ResponseWriter, r *http.Request) {
	if addr, _ := n.raft.LeaderWithID(); addr == "" {
		http.Error(w, "no leader", http.StatusServiceUnavailable)
		return
	}
	if applied, commit := n.raft.AppliedIndex(), n.raft.CommitIndex(); applied < commit {
		http.Error(w, "catching up", http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ready\n"))
}
