package device

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

// serveAgent serves conn's agent over HTTP/1.1 and h2c and returns a
// client speaking h2c to it (with opts) and a counter of HTTP/2 requests.
func serveAgent(t *testing.T, conn Conn, opts ...connect.ClientOption) (*AgentClient, *atomic.Int64) {
	t.Helper()
	path, h := NewAgentHandler(conn)
	var h2 atomic.Int64
	mux := http.NewServeMux()
	mux.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 {
			h2.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	srv := httptest.NewUnstartedServer(mux)
	var sp http.Protocols
	sp.SetHTTP1(true)
	sp.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &sp
	srv.Start()
	t.Cleanup(srv.Close)

	var cp http.Protocols
	cp.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &cp}
	t.Cleanup(tr.CloseIdleConnections)
	return NewAgentClient(&http.Client{Transport: tr}, srv.URL, opts...), &h2
}

func TestAgentProvisionsWipesAndRestoresOverH2C(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	c, h2 := serveAgent(t, d)

	p := f.provision(c)
	remote, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sameStatus(t, "status over the agent", remote, statusOf(t, d))
	if remote.Keys == nil || !bytes.Equal(remote.Keys.Receipt, p.receipt) {
		t.Fatalf("status keys over the agent: %+v", remote.Keys)
	}

	if err := c.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	if in := info(t, c); in.HasKeys || in.Epoch != 1 {
		t.Errorf("after Wipe over the agent: %+v", in)
	}
	if err := c.RestoreBackup(ctx, p.backup, p.cert, nil, p.lookup); err != nil {
		t.Fatal(err)
	}
	restored, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(restored.Keys.DevicePublicKey, remote.Keys.DevicePublicKey) || restored.Keys.Receipt != nil {
		t.Errorf("restored over the agent: %+v", restored.Keys)
	}
	assertKeysSignUnderCertificate(t, d, p.cert)
	if h2.Load() == 0 {
		t.Error("no request used HTTP/2 (h2c)")
	}
}

func TestAgentErrorsKeepTheirReasonAndCode(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	c, _ := serveAgent(t, d)
	p := f.provision(d)
	stale := bytes.Clone(p.backup)
	p2 := f.provision(d)
	tampered := bytes.Clone(p.backup)
	tampered[len(tampered)-1] ^= 1
	two, _ := f.newPackage(2)
	badLookup := bytes.Clone(p2.lookup)
	badLookup[len(badLookup)-1] ^= 1 // the last history hash

	cases := []struct {
		name string
		err  error
		want error
		code connect.Code
	}{
		{"malformed package", func() error { _, err := c.StorePackage(ctx, []byte{1}); return err }(), ErrMalformed, connect.CodeInvalidArgument},
		{"not the next epoch", func() error { _, err := c.StorePackage(ctx, two); return err }(), ErrWrongEpoch, connect.CodeFailedPrecondition},
		{"no pending package", c.CheckBackup(ctx, p.backup), ErrNoPending, connect.CodeFailedPrecondition},
		{"older backup", c.RestoreBackup(ctx, stale, p.cert, nil, p2.lookup), ErrRollback, connect.CodeFailedPrecondition},
		{"tampered backup", c.RestoreBackup(ctx, tampered, p.cert, nil, p2.lookup), ErrDecrypt, connect.CodePermissionDenied},
		{"no lookup proof", c.RestoreBackup(ctx, p2.backup, p2.cert, nil, nil), ErrMalformed, connect.CodeInvalidArgument},
		{"lookup proof that does not parse", c.RestoreBackup(ctx, p2.backup, p2.cert, nil, []byte("CLL1")), ErrMalformed, connect.CodeInvalidArgument},
		{"tampered lookup proof", c.RestoreBackup(ctx, p2.backup, p2.cert, nil, badLookup), ErrUntrusted, connect.CodePermissionDenied},
		{"lookup proof of an older epoch", c.RestoreBackup(ctx, p2.backup, p2.cert, nil, p.lookup), ErrMismatch, connect.CodeFailedPrecondition},
	}
	for _, tc := range cases {
		if !errors.Is(tc.err, tc.want) || connect.CodeOf(tc.err) != tc.code {
			t.Errorf("%s: err = %v (code %v), want %v with code %v", tc.name, tc.err, connect.CodeOf(tc.err), tc.want, tc.code)
		}
	}
}

func TestAgentSpeaksGRPC(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	c, _ := serveAgent(t, d, connect.WithGRPC())
	in := info(t, c)
	if !in.ChipID.Equal(d.chip.ID()) || !in.Identities.Equal(f.ids) {
		t.Errorf("ChipInfo over gRPC: %+v", in)
	}
	_, err := c.StorePackage(ctx, []byte("junk"))
	if !errors.Is(err, ErrMalformed) || connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("error over gRPC: %v", err)
	}
}

func TestAgentRefusesOversizedRequests(t *testing.T) {
	c, _ := serveAgent(t, newFixture(t).manufacture())
	_, err := c.StorePackage(ctx, make([]byte, MaxAgentRequestBytes+1))
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("oversized request: %v, want ResourceExhausted", err)
	}
}

// failingConn is a Conn whose Wipe fails with err (its other methods are
// not called).
type failingConn struct {
	Conn
	err error
}

func (c failingConn) Wipe(context.Context) error { return c.err }

func TestAgentReportsOtherErrorsAsInternal(t *testing.T) {
	boom := errors.New("disk full")
	c, _ := serveAgent(t, failingConn{err: boom})
	err := c.Wipe(ctx)
	if connect.CodeOf(err) != connect.CodeInternal {
		t.Errorf("Wipe: %v, want Internal", err)
	}
	for _, r := range errorReasons {
		if errors.Is(err, r.err) {
			t.Errorf("an internal error matches %v", r.err)
		}
	}
}

// TestStatusFromProtoRefusesUnknownKeyOrigins: a key origin the device
// protocol does not define is a bad response, including one that would
// wrap around to a known origin as a byte (257 to 1).
func TestStatusFromProtoRefusesUnknownKeyOrigins(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	st, err := d.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := statusToProto(st)
	if err != nil {
		t.Fatal(err)
	}
	pb.Info.HasKeys = true
	for _, origin := range []int32{int32(KeyGenerated), int32(KeyFromPool), 0, 3, 257, 258, -255} {
		pb.Keys = &v1.DeviceKeySummary{Epoch: 1, KeyOrigin: v1.DeviceKeyOrigin(origin)}
		_, err := statusFromProto(pb)
		known := origin == int32(KeyGenerated) || origin == int32(KeyFromPool)
		if known && err != nil {
			t.Errorf("key origin %d: %v", origin, err)
		}
		if !known && !errors.Is(err, errBadResponse) {
			t.Errorf("key origin %d: err = %v, want a bad response", origin, err)
		}
	}
}

// bigStatusConn is a hostile device agent's device: its status carries a
// trust bundle far larger than any device's ROM could hold.
type bigStatusConn struct {
	Conn
	st *Status
}

func (c bigStatusConn) Status(context.Context) (*Status, error) { return c.st, nil }

// TestAgentClientBoundsResponses: a device's answers are untrusted input;
// an AgentClient reads them up to MaxAgentResponseBytes, so a hostile
// device agent (a phone on a repair shop's bench) cannot make the
// recovering tool or a station allocate without limit.
func TestAgentClientBoundsResponses(t *testing.T) {
	f := newFixture(t)
	st, err := f.manufacture().Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// 32 MiB: 128 times the largest request the agent itself accepts,
	// and far above any legitimate status (ROM trust, certificate,
	// receipt).
	st.Trust = append(bytes.Clone(st.Trust), bytes.Repeat([]byte("#"), 32<<20)...)
	c, _ := serveAgent(t, bigStatusConn{st: st})
	got, err := c.Status(ctx)
	if err == nil {
		t.Fatalf("AgentClient.Status read a %d-byte response whole; want it refused (ResourceExhausted)", len(got.Trust))
	}
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("oversized answer: %v, want RESOURCE_EXHAUSTED", err)
	}
}
