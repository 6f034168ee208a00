package device

import (
	"context"
	"errors"
	"net/http"

	"connectrpc.com/connect"

	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// MaxAgentRequestBytes bounds every request message a device agent reads:
// the largest, RestoreBackup, carries a backup, a certificate, a receipt and
// a lookup proof, each bounded by the ledger's limits (about 200 KiB in
// all; a lookup proof grows by 40 bytes per epoch of the chip's history).
const MaxAgentRequestBytes = 256 << 10

// MaxAgentResponseBytes bounds every answer an AgentClient reads from a
// device agent: its largest (a status with the device's trust bundle,
// certificate and receipt) is a few tens of KiB.
const MaxAgentResponseBytes = 1 << 20

// NewAgentHandler returns the path and handler of the DeviceService
// (proto/chipledger/v1/device.proto) serving d, usually a *Device: Connect,
// gRPC and gRPC-Web, with requests bounded by MaxAgentRequestBytes (opts
// come after, so they can change it). Errors carry the Connect code and the
// DeviceErrorDetail of their cause (see errorReasons), which
// NewAgentClient turns back into this package's errors.
func NewAgentHandler(d Conn, opts ...connect.HandlerOption) (string, http.Handler) {
	opts = append([]connect.HandlerOption{connect.WithReadMaxBytes(MaxAgentRequestBytes)}, opts...)
	return chipledgerv1connect.NewDeviceServiceHandler(&agentService{d}, opts...)
}

// agentService adapts a Conn to the generated handler interface.
type agentService struct {
	d Conn
}

var _ chipledgerv1connect.DeviceServiceHandler = (*agentService)(nil)

func (s *agentService) GetChipInfo(ctx context.Context, _ *connect.Request[v1.GetChipInfoRequest]) (*connect.Response[v1.GetChipInfoResponse], error) {
	in, err := s.d.ChipInfo(ctx)
	if err != nil {
		return nil, toConnectError(err)
	}
	pb, err := infoToProto(in)
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&v1.GetChipInfoResponse{Info: pb}), nil
}

func (s *agentService) StorePackage(ctx context.Context, req *connect.Request[v1.StorePackageRequest]) (*connect.Response[v1.StorePackageResponse], error) {
	backup, err := s.d.StorePackage(ctx, req.Msg.GetPackage())
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&v1.StorePackageResponse{Backup: backup}), nil
}

func (s *agentService) CheckBackup(ctx context.Context, req *connect.Request[v1.CheckBackupRequest]) (*connect.Response[v1.CheckBackupResponse], error) {
	if err := s.d.CheckBackup(ctx, req.Msg.GetBackup()); err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&v1.CheckBackupResponse{}), nil
}

func (s *agentService) StoreCertificate(ctx context.Context, req *connect.Request[v1.StoreCertificateRequest]) (*connect.Response[v1.StoreCertificateResponse], error) {
	if err := s.d.StoreCertificate(ctx, req.Msg.GetCertificate()); err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&v1.StoreCertificateResponse{}), nil
}

func (s *agentService) StoreReceipt(ctx context.Context, req *connect.Request[v1.StoreReceiptRequest]) (*connect.Response[v1.StoreReceiptResponse], error) {
	if err := s.d.StoreReceipt(ctx, req.Msg.GetReceipt()); err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&v1.StoreReceiptResponse{}), nil
}

func (s *agentService) RestoreBackup(ctx context.Context, req *connect.Request[v1.RestoreBackupRequest]) (*connect.Response[v1.RestoreBackupResponse], error) {
	receipt := req.Msg.GetReceipt()
	if len(receipt) == 0 {
		receipt = nil // proto3 cannot tell an empty receipt from none
	}
	// A request without a lookup proof reaches the device, which refuses
	// it with ErrMalformed: InvalidArgument.
	if err := s.d.RestoreBackup(ctx, req.Msg.GetBackup(), req.Msg.GetCertificate(), receipt, req.Msg.GetLookupProof()); err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&v1.RestoreBackupResponse{}), nil
}

func (s *agentService) Wipe(ctx context.Context, _ *connect.Request[v1.WipeRequest]) (*connect.Response[v1.WipeResponse], error) {
	if err := s.d.Wipe(ctx); err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&v1.WipeResponse{}), nil
}

func (s *agentService) GetStatus(ctx context.Context, _ *connect.Request[v1.GetStatusRequest]) (*connect.Response[v1.GetStatusResponse], error) {
	st, err := s.d.Status(ctx)
	if err != nil {
		return nil, toConnectError(err)
	}
	pb, err := statusToProto(st)
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(pb), nil
}

// errorReasons maps this package's errors to the reason and Connect code a
// device agent reports for them, in the order they are tried: an error
// wrapping several (a certificate for another chip is both ErrWrongChip and
// a ledger error) gets the first that matches.
var errorReasons = []struct {
	err    error
	reason v1.DeviceErrorReason
	code   connect.Code
}{
	{ErrMalformed, v1.DeviceErrorReason_DEVICE_ERROR_REASON_MALFORMED, connect.CodeInvalidArgument},
	{ErrWrongChip, v1.DeviceErrorReason_DEVICE_ERROR_REASON_WRONG_CHIP, connect.CodePermissionDenied},
	{ErrWrongIdentity, v1.DeviceErrorReason_DEVICE_ERROR_REASON_WRONG_IDENTITY, connect.CodePermissionDenied},
	{ErrDecrypt, v1.DeviceErrorReason_DEVICE_ERROR_REASON_DECRYPT, connect.CodePermissionDenied},
	{ErrUntrusted, v1.DeviceErrorReason_DEVICE_ERROR_REASON_UNTRUSTED, connect.CodePermissionDenied},
	{ErrWrongEpoch, v1.DeviceErrorReason_DEVICE_ERROR_REASON_WRONG_EPOCH, connect.CodeFailedPrecondition},
	{ErrRollback, v1.DeviceErrorReason_DEVICE_ERROR_REASON_ROLLBACK, connect.CodeFailedPrecondition},
	{ErrNoPending, v1.DeviceErrorReason_DEVICE_ERROR_REASON_NO_PENDING, connect.CodeFailedPrecondition},
	{ErrMismatch, v1.DeviceErrorReason_DEVICE_ERROR_REASON_MISMATCH, connect.CodeFailedPrecondition},
}

// toConnectError gives err the Connect code and DeviceErrorDetail of its
// cause; anything else is an internal error.
func toConnectError(err error) error {
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return err
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	for _, r := range errorReasons {
		if errors.Is(err, r.err) {
			ce := connect.NewError(r.code, err)
			if detail, derr := connect.NewErrorDetail(&v1.DeviceErrorDetail{Reason: r.reason}); derr == nil {
				ce.AddDetail(detail)
			}
			return ce
		}
	}
	return connect.NewError(connect.CodeInternal, err)
}
