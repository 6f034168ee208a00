package device

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// AgentClient is a Conn to a device agent served by NewAgentHandler. Its
// errors wrap this package's errors when the agent names one (so
// errors.Is(err, ErrRollback) works as with an in-process Device), and the
// *connect.Error the agent returned.
type AgentClient struct {
	c chipledgerv1connect.DeviceServiceClient
}

// NewAgentClient returns a client of the device agent at baseURL (for
// example "http://127.0.0.1:9000") that sends requests with httpClient. An
// agent of `chipledger device serve` speaks HTTP/1.1 and h2c; opts can
// select gRPC (connect.WithGRPC), which needs an HTTP/2 client. Answers are
// read up to MaxAgentResponseBytes (a device is untrusted input: one that
// answers without end must not exhaust the tool's memory); opts can change
// that.
func NewAgentClient(httpClient connect.HTTPClient, baseURL string, opts ...connect.ClientOption) *AgentClient {
	opts = append([]connect.ClientOption{connect.WithReadMaxBytes(MaxAgentResponseBytes)}, opts...)
	return &AgentClient{c: chipledgerv1connect.NewDeviceServiceClient(httpClient, baseURL, opts...)}
}

var _ Conn = (*AgentClient)(nil)

// ChipInfo implements Conn.
func (a *AgentClient) ChipInfo(ctx context.Context) (*Info, error) {
	res, err := a.c.GetChipInfo(ctx, connect.NewRequest(&v1.GetChipInfoRequest{}))
	if err != nil {
		return nil, fromConnectError(err)
	}
	return infoFromProto(res.Msg.GetInfo())
}

// StorePackage implements Conn.
func (a *AgentClient) StorePackage(ctx context.Context, pkg []byte) ([]byte, error) {
	res, err := a.c.StorePackage(ctx, connect.NewRequest(&v1.StorePackageRequest{Package: pkg}))
	if err != nil {
		return nil, fromConnectError(err)
	}
	if len(res.Msg.GetBackup()) == 0 {
		return nil, errors.New("device agent: StorePackage returned no backup")
	}
	return res.Msg.GetBackup(), nil
}

// CheckBackup implements Conn.
func (a *AgentClient) CheckBackup(ctx context.Context, backup []byte) error {
	_, err := a.c.CheckBackup(ctx, connect.NewRequest(&v1.CheckBackupRequest{Backup: backup}))
	return fromConnectError(err)
}

// StoreCertificate implements Conn.
func (a *AgentClient) StoreCertificate(ctx context.Context, cert []byte) error {
	_, err := a.c.StoreCertificate(ctx, connect.NewRequest(&v1.StoreCertificateRequest{Certificate: cert}))
	return fromConnectError(err)
}

// StoreReceipt implements Conn.
func (a *AgentClient) StoreReceipt(ctx context.Context, receipt []byte) error {
	_, err := a.c.StoreReceipt(ctx, connect.NewRequest(&v1.StoreReceiptRequest{Receipt: receipt}))
	return fromConnectError(err)
}

// RestoreBackup implements Conn.
func (a *AgentClient) RestoreBackup(ctx context.Context, backup, cert, receipt, lookupProof []byte) error {
	_, err := a.c.RestoreBackup(ctx, connect.NewRequest(&v1.RestoreBackupRequest{Backup: backup, Certificate: cert, Receipt: receipt, LookupProof: lookupProof}))
	return fromConnectError(err)
}

// Wipe implements Conn.
func (a *AgentClient) Wipe(ctx context.Context) error {
	_, err := a.c.Wipe(ctx, connect.NewRequest(&v1.WipeRequest{}))
	return fromConnectError(err)
}

// Status implements Conn.
func (a *AgentClient) Status(ctx context.Context) (*Status, error) {
	res, err := a.c.GetStatus(ctx, connect.NewRequest(&v1.GetStatusRequest{}))
	if err != nil {
		return nil, fromConnectError(err)
	}
	return statusFromProto(res.Msg)
}

// remoteError is an error a device agent returned for one of this package's
// errors: it matches both that error and the *connect.Error.
type remoteError struct {
	reason error
	ce     *connect.Error
}

func (e *remoteError) Error() string   { return "device agent: " + e.ce.Error() }
func (e *remoteError) Unwrap() []error { return []error{e.reason, e.ce} }

// fromConnectError turns an agent's error back into this package's error
// its DeviceErrorDetail names; other errors are returned as they are.
func fromConnectError(err error) error {
	var ce *connect.Error
	if err == nil || !errors.As(err, &ce) {
		return err
	}
	for _, d := range ce.Details() {
		msg, derr := d.Value()
		detail, ok := msg.(*v1.DeviceErrorDetail)
		if derr != nil || !ok {
			continue
		}
		for _, r := range errorReasons {
			if r.reason == detail.GetReason() {
				return &remoteError{reason: r.err, ce: ce}
			}
		}
	}
	return fmt.Errorf("device agent: %w", err)
}
