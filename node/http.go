package node

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
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

// logFaults logs the API's answers that report a server's fault rather
// than the request's (INTERNAL, DATA_LOSS: this node's, or the leader's
// passed on), which the caller sees but the operator otherwise would not.
func (n *Node) logFaults() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			resp, err := next(ctx, req)
			if code := connect.CodeOf(err); err != nil && (code == connect.CodeInternal || code == connect.CodeDataLoss) {
				n.log.Error("request answered with a server fault", "procedure", req.Spec().Procedure, "code", code.String(), "err", err)
			}
			return resp, err
		}
	}
}

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
		connect.WithInterceptors(n.logFaults()),
	}
	mux := http.NewServeMux()
	ledgerPath, ledgerHandler := chipledgerv1connect.NewLedgerServiceHandler(&ledgerService{n}, opts...)
	mux.Handle(ledgerPath, n.whenCaughtUp(n.limitAppends(ledgerHandler)))
	adminPath, adminHandler := chipledgerv1connect.NewAdminServiceHandler(&adminService{n}, opts...)
	mux.Handle(adminPath, n.authorizeAdmin(adminHandler))
	mux.Handle("GET /checkpoint", n.whenCaughtUp(http.HandlerFunc(n.serveCheckpoint)))
	mux.Handle("GET /tile/", n.whenCaughtUp(http.HandlerFunc(n.serveTile)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", n.serveReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics.registry, promhttp.HandlerOpts{}))

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	listener := n.listener
	if n.cfg.TLS != nil {
		protocols.SetHTTP2(true)
		tc := n.cfg.TLS.serverConfig(false)
		tc.NextProtos = []string{"h2", "http/1.1"}
		listener = tls.NewListener(listener, tc)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	n.http = &http.Server{
		Handler:           mux,
		Protocols:         &protocols,
		ReadHeaderTimeout: 5 * time.Second,
		// Requests are small (at most 128 KiB); a client that takes longer
		// than this to send one is holding a connection for nothing.
		ReadTimeout:    30 * time.Second,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 16 << 10,
	}
	n.http.RegisterOnShutdown(n.stopStreams)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.http.Serve(listener); ignoreClosed(err) != nil {
			n.log.Error("API server stopped", "err", err)
		}
	}()
}

// whenCaughtUp answers the read API (checkpoints, tiles, proofs, entries)
// UNAVAILABLE until the node has caught up after its start (watchCatchUp),
// so that no client sees it serve a smaller tree than before it stopped.
// Appends pass: they are answered by the leader.
func (n *Node) whenCaughtUp(next http.Handler) http.Handler {
	errw := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.caughtUp.Load() || strings.HasSuffix(r.URL.Path, "/Append") {
			next.ServeHTTP(w, r)
			return
		}
		msg := "catching up after a restart; ask another node"
		if errw.IsSupported(r) {
			errw.Write(w, r, n.unavailable(msg))
			return
		}
		http.Error(w, msg, http.StatusServiceUnavailable)
	})
}

// appendBodyTimeout bounds how long an append may take to send its body
// once it holds a slot.
const appendBodyTimeout = 10 * time.Second

// limitAppends refuses an Append when MaxAppendsInFlight are being handled
// already, before its body is read: load is pushed back to the clients with
// RESOURCE_EXHAUSTED and a retry hint rather than queued, so a flood of
// appends holds bounded memory.
func (n *Node) limitAppends(next http.Handler) http.Handler {
	errw := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/Append") {
			next.ServeHTTP(w, r)
			return
		}
		select {
		case n.appending <- struct{}{}:
			defer func() { <-n.appending }()
			// A slot is held while the body is read: an honest client
			// sends its at most 128 KiB at once, one that trickles it
			// loses the slot soon.
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(appendBodyTimeout))
			next.ServeHTTP(w, r)
		default:
			n.metrics.pushedBack.Inc()
			err := connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%w: %d appends in flight at this node; retry shortly", errQueueFull, cap(n.appending)))
			setRetryAfter(err.Meta(), queueFullRetry)
			errw.Write(w, r, err)
		}
	})
}

// authorizeAdmin lets through the admin calls that change the cluster
// (everything but Status) only from an operator: a client presenting a
// certificate from the cluster CA (other nodes forwarding a call present
// theirs), or the admin bearer token. A node with neither TLS nor a token
// configured (--dev, --insecure) lets every call through.
func (n *Node) authorizeAdmin(next http.Handler) http.Handler {
	open := n.cfg.TLS == nil && len(n.cfg.AdminTokenHash) == 0
	errw := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if open || strings.HasSuffix(r.URL.Path, "/Status") || n.isOperator(r) {
			next.ServeHTTP(w, r)
			return
		}
		msg := "admin calls need a client certificate from the cluster CA or the admin token (Authorization: Bearer …)"
		if strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			msg = "the admin token was refused: it does not match this node's --admin-token-hash"
		}
		errw.Write(w, r, connect.NewError(connect.CodePermissionDenied, errors.New(msg)))
	})
}

// isOperator reports whether r carries an operator's credentials.
func (n *Node) isOperator(r *http.Request) bool {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return true // verified against the cluster CA by the TLS handshake
	}
	if len(n.cfg.AdminTokenHash) == 0 {
		return false
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	sum := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(sum[:], n.cfg.AdminTokenHash) == 1
}

// serveCheckpoint serves the latest signed checkpoint (C2SP tlog-tiles).
func (n *Node) serveCheckpoint(w http.ResponseWriter, r *http.Request) {
	// A new log gets its first checkpoint (its genesis index root) moments
	// after a leader is elected: wait briefly rather than fail at once.
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	cp, err := n.fsm.waitForSize(ctx, 1)
	if err != nil {
		http.Error(w, "the log has no checkpoint yet", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(cp.Signed)
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
	case errors.Is(err, ErrStoreFault):
		// Recovering from a disk fault: another node, or this one later,
		// serves it (checked first: the recovering store may be behind the
		// served checkpoint, and a 404 would say the tile does not exist).
		w.Header().Set("Retry-After", "1")
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
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

// serveReady answers 200 when the node has a leader, can write its store,
// and has applied every entry the cluster had committed a moment ago
// (watchReadiness), 503 otherwise.
func (n *Node) serveReady(w http.ResponseWriter, r *http.Request) {
	if n.closing.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	if addr, _ := n.raft.LeaderWithID(); addr == "" {
		http.Error(w, "no leader", http.StatusServiceUnavailable)
		return
	}
	if err := n.fsm.storeFault(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if !n.caughtUp.Load() {
		http.Error(w, "catching up after a restart", http.StatusServiceUnavailable)
		return
	}
	if lag := n.lag.Load(); lag == nil || *lag != "" {
		why := "catching up"
		if lag != nil {
			why += ": " + *lag
		}
		http.Error(w, why, http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ready\n"))
}
