package hostport

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		addr     string
		listen   bool
		wantFail string // a word of the error, or "" for valid
	}{
		{"10.0.0.1:7000", false, ""},
		{"node-1.example:443", false, ""},
		{"[::1]:8080", false, ""},
		{":7000", true, ""},
		{"127.0.0.1:0", true, ""},
		{":7000", false, "no host"},
		{"127.0.0.1:0", false, "port"},
		{"10.0.0.1:07000", false, "leading zeros"},
		{"10.0.0.1:+7000", false, "port"},
		{"10.0.0.1:65536", false, "port"},
		{"10.0.0.1", false, "HOST:PORT"},
		{"no port here", false, "HOST:PORT"},
		{"bad host:7000", false, "space"},
		{"bad\nhost:7000", false, "control"},
		{"\xffhost:7000", false, "control"},
		{"[host]:7000", false, "write it host:7000"},
		{strings.Repeat("h", 251) + ":7000", false, "at most"},
	} {
		err := Check(tc.addr, tc.listen)
		switch {
		case tc.wantFail == "" && err != nil:
			t.Errorf("Check(%q, %v) = %v, want nil", tc.addr, tc.listen, err)
		case tc.wantFail != "" && (err == nil || !strings.Contains(err.Error(), tc.wantFail)):
			t.Errorf("Check(%q, %v) = %v, want an error about %q", tc.addr, tc.listen, err, tc.wantFail)
		}
	}
}

func FuzzCheck(f *testing.F) {
	f.Add("10.0.0.1:7000", false)
	f.Add("[::1]:0", true)
	f.Fuzz(func(t *testing.T, addr string, listen bool) {
		if Check(addr, listen) != nil {
			return
		}
		// A valid address is the one spelling of its host and port.
		host, port, err := net.SplitHostPort(addr)
		if err != nil || net.JoinHostPort(host, port) != addr {
			t.Fatalf("Check accepted %q: %q %q %v", addr, host, port, err)
		}
		if n, err := strconv.Atoi(port); err != nil || strconv.Itoa(n) != port || (!listen && (n == 0 || host == "")) {
			t.Fatalf("Check accepted %q with port %q", addr, port)
		}
	})
}
