// Package hostport checks HOST:PORT network addresses strictly, so that
// one address has one spelling: the node's flags, its peer list and the
// Join requests it serves all compare addresses as strings, and an address
// Raft cannot dial (no port, a port with a leading zero) would make a
// voter no one reaches.
package hostport
