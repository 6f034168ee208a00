// Package provisioner is the factory station, the "secure processing point"
// of DESIGN.md §5: it runs the provisioning handshake with a device, derives
// the device's channel key, generates or reserves its key pair from the
// pre-generated pool, issues its device certificate, signs its escrow entry
// and hands it the receipt.
//
// Only the manufacturer CA exists yet (ca.go): a root CA and a device CA
// under it, kept as PEM files in a directory, that issue station and device
// certificates and produce the trust bundle ledger nodes are configured
// with. Its keys are software keys in files.
//
// It is not the ledger (see ledger and node) and not the device (see
// device); it talks to both through their interfaces.
package provisioner
