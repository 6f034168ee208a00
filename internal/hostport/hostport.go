package hostport

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"unicode"
)

// MaxLen bounds an address: member records store it with a one-byte
// length.
const MaxLen = 255

// Check reports whether addr is HOST:PORT with a port from 1 to 65535
// written without leading zeros. With listen, the host may be empty (every
// interface) and the port 0 (any free port). The host may not hold spaces
// or control characters, and is bracketed only if it is an IPv6 address;
// it is not resolved.
func Check(addr string, listen bool) error {
	if len(addr) > MaxLen {
		return fmt.Errorf("address of %d bytes: at most %d", len(addr), MaxLen)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want HOST:PORT")
	}
	if net.JoinHostPort(host, port) != addr {
		return fmt.Errorf("write it %s", net.JoinHostPort(host, port))
	}
	if host == "" && !listen {
		return errors.New("no host: want HOST:PORT")
	}
	for _, r := range host {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == unicode.ReplacementChar {
			return fmt.Errorf("host %q holds a space or control character", host)
		}
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (n == 0 && !listen) || strconv.FormatUint(n, 10) != port {
		return fmt.Errorf("port %q: want a number from 1 to 65535, without leading zeros", port)
	}
	return nil
}
