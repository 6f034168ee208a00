// Package devicelink connects the device package to the client package,
// which by design does not import it: it adapts a device.Conn to what the
// recovery flow needs.
package devicelink

import (
	"context"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/device"
)

// ForRecovery returns conn as a client.RecoveryDevice.
func ForRecovery(conn device.Conn) client.RecoveryDevice { return recoveryDevice{conn} }

type recoveryDevice struct{ device.Conn }

// Identity implements client.RecoveryDevice.
func (d recoveryDevice) Identity(ctx context.Context) (*client.DeviceIdentity, error) {
	st, err := d.Status(ctx)
	if err != nil {
		return nil, err
	}
	return &client.DeviceIdentity{
		ChipID: st.ChipID, Identities: st.Identities, Epoch: st.Epoch,
		Trust: st.Trust, LogVerifierKey: st.LogVerifierKey,
	}, nil
}
