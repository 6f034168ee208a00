package chaos

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer echoes every line it reads on a loopback listener.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

// testNetwork is a network in which connections from 127.0.0.21 come from
// node 0, with a proxy in front of an echo server as node 1.
func testNetwork(t *testing.T) (*Network, string) {
	t.Helper()
	n := NewNetwork(map[string]Endpoint{"127.0.0.21": 0})
	t.Cleanup(n.Close)
	p, err := n.Listen("127.0.0.1:0", 1, echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	return n, p.Addr()
}

// dialFrom connects to addr from node 0's address.
func dialFrom(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.21")}, Timeout: time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends a line and reads the echo, with a deadline.
func roundTrip(c net.Conn, deadline time.Duration) (time.Duration, error) {
	start := time.Now()
	c.SetDeadline(start.Add(deadline))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return 0, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return 0, err
	}
	if line != "ping\n" {
		return 0, errors.New("echo garbled: " + line)
	}
	return time.Since(start), nil
}

func TestProxyForwardsWithoutFaults(t *testing.T) {
	_, addr := testNetwork(t)
	c := dialFrom(t, addr)
	if _, err := roundTrip(c, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestProxyCutClosesLiveConnectionsAndRefusesNewOnes(t *testing.T) {
	n, addr := testNetwork(t)
	live := dialFrom(t, addr)
	if _, err := roundTrip(live, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// A cut in either direction cuts the connection.
	n.Set(Link{1, 0}, Fault{Cut: true})
	if _, err := roundTrip(live, 5*time.Second); err == nil {
		t.Fatal("a live connection still works across a cut")
	}
	if _, err := roundTrip(dialFrom(t, addr), 5*time.Second); err == nil {
		t.Fatal("a new connection works across a cut")
	}
	if refused, dropped := n.Stats(); refused != 1 || dropped != 1 {
		t.Errorf("stats: %d refused, %d dropped; want 1 and 1", refused, dropped)
	}

	// Clients are not cut off by a cut between nodes.
	client, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := roundTrip(client, 5*time.Second); err != nil {
		t.Fatalf("a client's connection: %v", err)
	}

	n.Heal()
	if _, err := roundTrip(dialFrom(t, addr), 5*time.Second); err != nil {
		t.Fatalf("after healing: %v", err)
	}
}

func TestProxyStallHoldsDataUntilHealed(t *testing.T) {
	n, addr := testNetwork(t)
	c := dialFrom(t, addr)
	n.Set(Link{0, 1}, Fault{Stall: true})
	if _, err := roundTrip(c, 200*time.Millisecond); !isTimeout(err) {
		t.Fatalf("a round trip across a stall: %v; want a timeout", err)
	}
	n.Heal()
	// The stalled ping arrives, then the new one.
	if _, err := roundTrip(c, 5*time.Second); err != nil {
		t.Fatalf("after healing, the stalled data: %v", err)
	}
	if _, err := roundTrip(c, 5*time.Second); err != nil {
		t.Fatalf("after healing: %v", err)
	}
}

func TestProxyDelaysOneDirection(t *testing.T) {
	n, addr := testNetwork(t)
	c := dialFrom(t, addr)
	const delay = 150 * time.Millisecond
	n.Set(Link{1, 0}, Fault{Delay: delay})
	took, err := roundTrip(c, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if took < delay {
		t.Errorf("a round trip took %s across a link delayed by %s", took, delay)
	}
}

func TestProxyDropClosesMatchingConnections(t *testing.T) {
	n, addr := testNetwork(t)
	fromNode := dialFrom(t, addr)
	fromClient, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer fromClient.Close()
	for _, c := range []net.Conn{fromNode, fromClient} {
		if _, err := roundTrip(c, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if got := n.Drop(func(a, b Endpoint) bool { return a == 0 && b == 1 }); got != 1 {
		t.Errorf("dropped %d connections, want 1", got)
	}
	if _, err := roundTrip(fromNode, 5*time.Second); err == nil {
		t.Error("a dropped connection still works")
	}
	if _, err := roundTrip(fromClient, 5*time.Second); err != nil {
		t.Errorf("a connection that was not dropped: %v", err)
	}
	// Dropping is not a fault: the node reconnects.
	if _, err := roundTrip(dialFrom(t, addr), 5*time.Second); err != nil {
		t.Errorf("reconnecting: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}
