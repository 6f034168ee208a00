package demo

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/device"
	"github.com/chipledger/chipledger/internal/devicelink"
)

// recoverOne wipes a device, recovers its keys from the ledger with every
// check spelled out, and checks that they are the keys it had.
func recoverOne(ctx context.Context, p *printer, s *Summary, cl *client.Client, d *device.Device) error {
	info, err := d.ChipInfo(ctx)
	if err != nil {
		return err
	}
	p.step(fmt.Sprintf("Device %s is wiped and recovered from the ledger", info.ChipID))
	before, err := fingerprint(d)
	if err != nil {
		return err
	}
	st, err := d.Status(ctx)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(st.Keys.Certificate)
	if err != nil {
		return err
	}
	p.line("it holds keys %s (a fingerprint of its device key and channel key) for %s", before, info.Identities)
	if err := d.Wipe(ctx); err != nil {
		return err
	}
	p.line("wiped: its keys, certificate and receipt are gone; only the chip (ID and secret key) remains")

	start := time.Now()
	rep, err := client.Recover(ctx, cl, devicelink.ForRecovery(d), client.RecoverOptions{})
	s.RecoveryTime = time.Since(start)
	if rep != nil {
		for _, step := range rep.Steps {
			mark := "✓"
			if !step.OK {
				mark = "✗"
			}
			p.line("%s %s", mark, step.Detail)
		}
	}
	if err != nil {
		return fmt.Errorf("recover device %s: %w", info.ChipID, err)
	}
	after, err := fingerprint(d)
	if err != nil {
		return err
	}
	pub, _ := cert.PublicKey.(*ecdsa.PublicKey)
	if err := signsLikeBefore(d, pub); err != nil {
		return err
	}
	if rep.Witnessed != nil {
		s.WitnessedSize = rep.Witnessed.Size
	}
	s.RecoveredChip = info.ChipID.String()
	s.RecoveredKeysEqual = after == before
	p.line("keys after recovery: %s — the same as before: %v (recovered in %s)", after, s.RecoveredKeysEqual, s.RecoveryTime.Round(time.Microsecond))
	if !s.RecoveredKeysEqual {
		return fmt.Errorf("device %s recovered other keys than it had", info.ChipID)
	}
	return nil
}
