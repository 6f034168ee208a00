package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// serve serves a LedgerService on loopback over HTTP/1.1 and h2c, as nodes
// do, until the test ends, and returns its address.
func serve(t testing.TB, h chipledgerv1connect.LedgerServiceHandler) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(chipledgerv1connect.NewLedgerServiceHandler(h))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// A proxy stands in front of a real node: it forwards every call and lets
// a test alter the answer, to play a node that lies.
type proxy struct {
	chipledgerv1connect.UnimplementedLedgerServiceHandler
	up chipledgerv1connect.LedgerServiceClient

	mu     sync.Mutex
	calls  map[string]int
	tamper func(ctx context.Context, proc string, req, resp proto.Message) error
	// streamMax, if positive, ends each watch stream after that many
	// messages.
	streamMax int
	// leader, if set, is named in the Chipledger-Leader header of every
	// answer.
	leader string
	// witnessed, if set, answers every GetCheckpoint with witnessed set,
	// without asking the node.
	witnessed []byte
}

// startProxy serves a proxy in front of the node at addr and returns it and
// its address.
func startProxy(t testing.TB, addr string) (*proxy, string) {
	hc := h2cClient()
	p := &proxy{
		up:    chipledgerv1connect.NewLedgerServiceClient(hc, "http://"+addr),
		calls: make(map[string]int),
	}
	// Before the node stops: it waits for open connections to close.
	t.Cleanup(hc.CloseIdleConnections)
	return p, serve(t, p)
}

// setTamper installs fn, called with each forwarded answer; it may change
// the answer or fail the call.
func (p *proxy) setTamper(fn func(ctx context.Context, proc string, req, resp proto.Message) error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tamper = fn
}

// count returns how many calls of proc the proxy received.
func (p *proxy) count(proc string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[proc]
}

func (p *proxy) record(proc string) func(ctx context.Context, proc string, req, resp proto.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls[proc]++
	return p.tamper
}

func forward[Req, Resp any](ctx context.Context, p *proxy, proc string, req *connect.Request[Req],
	call func(context.Context, *connect.Request[Req]) (*connect.Response[Resp], error)) (*connect.Response[Resp], error) {
	tamper := p.record(proc)
	resp, err := call(ctx, connect.NewRequest(req.Msg))
	if err != nil {
		return nil, err
	}
	if tamper != nil {
		if err := tamper(ctx, proc, any(req.Msg).(proto.Message), any(resp.Msg).(proto.Message)); err != nil {
			return nil, err
		}
	}
	out := connect.NewResponse(resp.Msg)
	p.mu.Lock()
	if p.leader != "" {
		out.Header().Set("Chipledger-Leader", p.leader)
	}
	p.mu.Unlock()
	return out, nil
}

func (p *proxy) Append(ctx context.Context, req *connect.Request[v1.AppendRequest]) (*connect.Response[v1.AppendResponse], error) {
	return forward(ctx, p, "Append", req, p.up.Append)
}

func (p *proxy) GetCheckpoint(ctx context.Context, req *connect.Request[v1.GetCheckpointRequest]) (*connect.Response[v1.GetCheckpointResponse], error) {
	p.mu.Lock()
	witnessed := p.witnessed
	p.mu.Unlock()
	if witnessed != nil && req.Msg.GetWitnessed() {
		p.record("GetCheckpoint")
		return connect.NewResponse(&v1.GetCheckpointResponse{Checkpoint: witnessed}), nil
	}
	return forward(ctx, p, "GetCheckpoint", req, p.up.GetCheckpoint)
}

func (p *proxy) GetEntries(ctx context.Context, req *connect.Request[v1.GetEntriesRequest]) (*connect.Response[v1.GetEntriesResponse], error) {
	return forward(ctx, p, "GetEntries", req, p.up.GetEntries)
}

func (p *proxy) GetInclusionProof(ctx context.Context, req *connect.Request[v1.GetInclusionProofRequest]) (*connect.Response[v1.GetInclusionProofResponse], error) {
	return forward(ctx, p, "GetInclusionProof", req, p.up.GetInclusionProof)
}

func (p *proxy) GetConsistencyProof(ctx context.Context, req *connect.Request[v1.GetConsistencyProofRequest]) (*connect.Response[v1.GetConsistencyProofResponse], error) {
	return forward(ctx, p, "GetConsistencyProof", req, p.up.GetConsistencyProof)
}

func (p *proxy) LookupChip(ctx context.Context, req *connect.Request[v1.LookupChipRequest]) (*connect.Response[v1.LookupChipResponse], error) {
	return forward(ctx, p, "LookupChip", req, p.up.LookupChip)
}

func (p *proxy) GetLogInfo(ctx context.Context, req *connect.Request[v1.GetLogInfoRequest]) (*connect.Response[v1.GetLogInfoResponse], error) {
	return forward(ctx, p, "GetLogInfo", req, p.up.GetLogInfo)
}

func (p *proxy) WatchCheckpoints(ctx context.Context, req *connect.Request[v1.WatchCheckpointsRequest], stream *connect.ServerStream[v1.WatchCheckpointsResponse]) error {
	tamper := p.record("WatchCheckpoints")
	up, err := p.up.WatchCheckpoints(ctx, connect.NewRequest(req.Msg))
	if err != nil {
		return err
	}
	defer up.Close()
	p.mu.Lock()
	limit := p.streamMax
	p.mu.Unlock()
	for sent := 0; up.Receive(); sent++ {
		if limit > 0 && sent == limit {
			return nil
		}
		msg := up.Msg()
		if tamper != nil {
			if err := tamper(ctx, "WatchCheckpoints", req.Msg, msg); err != nil {
				return err
			}
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
	return up.Err()
}
