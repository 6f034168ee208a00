// Package witness is a small C2SP tlog-witness (https://c2sp.org/tlog-witness):
// an HTTP server that chipledger nodes submit their signed checkpoints to,
// which checks that each one is signed by a log it follows and is consistent
// with the last checkpoint it cosigned for that log, records it durably, and
// answers with a cosignature/v1 (c2sp.org/tlog-cosignature) signature line.
// It also holds the client side of the protocol (AddCheckpoint,
// MarshalRequest, ParseRequest), so that the request format and status codes
// live in one place.
//
// A witness that cosigns a checkpoint promises never to cosign one of the
// same log that is inconsistent with it; this package keeps that promise
// across concurrent requests (one lock per log) and restarts (the latest
// cosigned tree of each log is fsynced before the cosignature is returned).
//
// It is not a general-purpose witness: it follows only logs with Ed25519
// (0x01) keys whose checkpoints carry no extension lines, as chipledger logs
// are; it keeps no history and serves no checkpoints; and it does not collect
// cosignatures into a policy quorum, which is the log's job.
package witness
