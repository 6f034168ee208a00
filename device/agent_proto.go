package device

import (
	"errors"
	"fmt"

	"github.com/chipledger/chipledger/ledger"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

// errBadResponse reports an agent response that breaks the protocol.
var errBadResponse = errors.New("device agent: malformed response")

func infoToProto(in *Info) (*v1.DeviceInfo, error) {
	ids, err := in.Identities.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return &v1.DeviceInfo{
		ChipId:           in.ChipID,
		Identities:       ids,
		Epoch:            in.Epoch,
		HasKeys:          in.HasKeys,
		HasReceipt:       in.HasReceipt,
		PendingEpoch:     in.PendingEpoch,
		PendingCertified: in.PendingCertified,
	}, nil
}

func infoFromProto(pb *v1.DeviceInfo) (*Info, error) {
	if pb == nil {
		return nil, fmt.Errorf("%w: no device info", errBadResponse)
	}
	chip := ledger.ChipID(pb.GetChipId())
	if err := chip.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadResponse, err)
	}
	ids, err := ledger.ParseIdentities(pb.GetIdentities())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadResponse, err)
	}
	return &Info{
		ChipID:           chip,
		Identities:       ids,
		Epoch:            pb.GetEpoch(),
		HasKeys:          pb.GetHasKeys(),
		HasReceipt:       pb.GetHasReceipt(),
		PendingEpoch:     pb.GetPendingEpoch(),
		PendingCertified: pb.GetPendingCertified(),
	}, nil
}

func statusToProto(st *Status) (*v1.GetStatusResponse, error) {
	info, err := infoToProto(&st.Info)
	if err != nil {
		return nil, err
	}
	pb := &v1.GetStatusResponse{Info: info, LogVerifierKey: st.LogVerifierKey, Trust: st.Trust}
	if k := st.Keys; k != nil {
		pb.Keys = &v1.DeviceKeySummary{
			Epoch:            k.Epoch,
			MasterKeyVersion: k.MasterKeyVersion,
			KeyOrigin:        v1.DeviceKeyOrigin(k.KeyOrigin),
			DevicePublicKey:  k.DevicePublicKey,
			ChannelKeyCheck:  k.ChannelKeyCheck,
			Certificate:      k.Certificate,
			Receipt:          k.Receipt,
		}
	}
	return pb, nil
}

func statusFromProto(pb *v1.GetStatusResponse) (*Status, error) {
	info, err := infoFromProto(pb.GetInfo())
	if err != nil {
		return nil, err
	}
	st := &Status{Info: *info, LogVerifierKey: pb.GetLogVerifierKey(), Trust: pb.GetTrust()}
	if k := pb.GetKeys(); k != nil {
		origin := KeyOrigin(k.GetKeyOrigin())
		if v1.DeviceKeyOrigin(origin) != k.GetKeyOrigin() || origin != KeyGenerated && origin != KeyFromPool {
			return nil, fmt.Errorf("%w: key origin %v", errBadResponse, k.GetKeyOrigin())
		}
		st.Keys = &KeySummary{
			Epoch:            k.GetEpoch(),
			MasterKeyVersion: k.GetMasterKeyVersion(),
			KeyOrigin:        origin,
			DevicePublicKey:  k.GetDevicePublicKey(),
			ChannelKeyCheck:  k.GetChannelKeyCheck(),
			Certificate:      k.GetCertificate(),
			Receipt:          nilIfEmpty(k.GetReceipt()),
		}
	}
	if st.HasKeys != (st.Keys != nil) {
		return nil, fmt.Errorf("%w: has_keys is %t, which the key summary contradicts", errBadResponse, st.HasKeys)
	}
	return st, nil
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}
