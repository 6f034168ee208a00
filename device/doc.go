// Package device is the device side of chipledger: the Chip interface (the
// chip ID in ROM, a secret chip key that never crosses the interface, a
// monotonic epoch counter) with its software implementation SoftChip, the
// data package and backup envelope formats (DESIGN.md §3.3, §3.4), and the
// firmware logic of a Device: it stores the package a station sends, seals
// it into a backup with the chip, verifies the certificate and receipt
// against the manufacturer trust and log key burned into its ROM, and
// restores a backup during recovery once the chip's lookup proof, verified
// with that log key, shows it is the chip's latest (DESIGN.md §3.7). NewAgentHandler serves a Device over
// Connect; NewAgentClient dials one. Both it and *Device implement Conn, the
// interface a station or a recovering client drives a device through.
//
// It is not the station (package provisioner) and not the ledger: it never
// talks to the network on its own, and every check it makes uses only what
// the device holds.
package device
