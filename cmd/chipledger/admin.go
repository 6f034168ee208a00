package main

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/chipledger/chipledger/internal/clustertls"
	"github.com/chipledger/chipledger/ledger"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// adminCommand is `chipledger admin`: the AdminService from the command
// line.
func adminCommand() *cli.Command {
	flags := []cli.Flag{
		&cli.StringSliceFlag{Name: "ledger", Required: true, EnvVars: env("ledger"),
			Usage: "API `ADDRESS` of a ledger node (calls that change the cluster are forwarded to the leader); of a list, as the other commands take, the first is asked"},
		&cli.StringFlag{Name: "tls-ca", EnvVars: env("tls-ca"), TakesFile: true,
			Usage: "cluster CA certificate `FILE`, for nodes that serve TLS"},
		&cli.StringFlag{Name: "tls-cert", EnvVars: env("admin-tls-cert"), TakesFile: true,
			Usage: "admin client certificate `FILE` (from \"chipledger tls admin\")"},
		&cli.StringFlag{Name: "tls-key", EnvVars: env("admin-tls-key"), TakesFile: true,
			Usage: "the admin certificate's key `FILE`"},
		&cli.StringFlag{Name: "admin-token", EnvVars: env("admin-token"),
			Usage: "admin `TOKEN` (from \"chipledger tls token\"), instead of a client certificate; prefer the environment variable"},
	}
	return &cli.Command{
		Name:  "admin",
		Usage: "administer a ledger cluster: status, revoke a station, remove a node, move leadership",
		UsageText: `chipledger admin status --ledger ADDR [--json]
chipledger admin revoke-station --ledger ADDR (--station-cert FILE | --station-id HEX) [--reason TEXT] [--at TIME]
chipledger admin leave --ledger ADDR --node-id ID
chipledger admin transfer-leadership --ledger ADDR [--to ID]

   # a TLS cluster, with an admin certificate from "chipledger tls admin"
   chipledger admin status --ledger 10.0.0.1:8080 --tls-ca tls/ca.pem
   chipledger admin leave --ledger 10.0.0.1:8080 --tls-ca tls/ca.pem \
       --tls-cert tls/admin-alice.pem --tls-key tls/admin-alice.key --node-id n3`,
		Description: `Calls the AdminService of a node. Without TLS (a --dev or --insecure
cluster) no credentials are needed. With TLS, every call but status needs an
admin client certificate from the cluster CA (--tls-cert, --tls-key) or the
admin token (--admin-token or CHIPLEDGER_ADMIN_TOKEN), which is sent only over
TLS (--tls-ca).`,
		Subcommands: []*cli.Command{{
			Name:      "status",
			Usage:     "show the node's Raft role and state, and each peer's",
			UsageText: "chipledger admin status --ledger 10.0.0.1:8080 [--json]",
			Flags:     append(flags, &cli.BoolFlag{Name: "json", Usage: "print the status as JSON"}),
			Action:    runAdminStatus,
		}, {
			Name:  "revoke-station",
			Usage: "append a station revocation: the ledger refuses the station's entries from then on",
			UsageText: `chipledger admin revoke-station --ledger ADDR --station-cert station/station.pem --reason "key leaked"
chipledger admin revoke-station --ledger ADDR --station-id HEX [--at 2026-11-01T00:00:00Z]`,
			Description: `The revocation is a public, permanent log entry. Entries the station made
before it stay valid in the log; auditors report any entry of the station after
it. --at records when the station stopped being trusted (for example the
suspected time of a compromise); it defaults to now and cannot be in the
future. Giving the same station, reason and --at again is answered with the
first revocation.`,
			Flags: append(flags,
				&cli.StringFlag{Name: "station-id", Usage: "the station `ID`: 64 hex digits (SHA-256 of its certificate)"},
				&cli.StringFlag{Name: "station-cert", TakesFile: true, Usage: "the station certificate `FILE` (PEM), instead of --station-id"},
				&cli.StringFlag{Name: "reason", Usage: "why, for the public record (at most 255 bytes)"},
				&cli.TimestampFlag{Name: "at", Layout: time.RFC3339, Usage: "when the station stopped being trusted (RFC 3339; default now)"},
			),
			Action: runAdminRevoke,
		}, {
			Name:      "leave",
			Usage:     "remove a node from the cluster",
			UsageText: "chipledger admin leave --ledger ADDR --node-id n3",
			Flags:     append(flags, &cli.StringFlag{Name: "node-id", Required: true, Usage: "the `ID` of the node to remove"}),
			Action: func(c *cli.Context) error {
				a, ctx, err := adminClient(c)
				if err != nil {
					return err
				}
				if _, err := a.Leave(ctx, adminRequest(c, &v1.LeaveRequest{NodeId: c.String("node-id")})); err != nil {
					return adminError(c, "leave "+c.String("node-id"), err)
				}
				fmt.Fprintf(c.App.Writer, "removed %s\n", c.String("node-id"))
				return nil
			},
		}, {
			Name:      "transfer-leadership",
			Usage:     "hand leadership to another voter",
			UsageText: "chipledger admin transfer-leadership --ledger ADDR [--to n2]",
			Flags:     append(flags, &cli.StringFlag{Name: "to", Usage: "the `ID` of the new leader (default: the most up-to-date voter)"}),
			Action: func(c *cli.Context) error {
				a, ctx, err := adminClient(c)
				if err != nil {
					return err
				}
				resp, err := a.TransferLeadership(ctx, adminRequest(c, &v1.TransferLeadershipRequest{NodeId: c.String("to")}))
				if err != nil {
					return adminError(c, "transfer leadership", err)
				}
				fmt.Fprintf(c.App.Writer, "leader is now %s\n", resp.Msg.GetLeaderId())
				return nil
			},
		}},
	}
}

// adminClient returns the AdminService client of the command's flags and
// a context bounded for one call.
func adminClient(c *cli.Context) (chipledgerv1connect.AdminServiceClient, context.Context, error) {
	if err := noArgs(c); err != nil {
		return nil, nil, err
	}
	addr := adminAddr(c)
	t := &nodeTransport{plain: http.DefaultTransport, secure: http.DefaultTransport}
	if ca := c.String("tls-ca"); ca != "" {
		if (c.String("tls-cert") == "") != (c.String("tls-key") == "") {
			return nil, nil, errors.New("give both --tls-cert and --tls-key, or neither")
		}
		tc, err := clustertls.ClientConfig(ca, c.String("tls-cert"), c.String("tls-key"))
		if err != nil {
			return nil, nil, fmt.Errorf("--tls-ca/--tls-cert/--tls-key: %w", err)
		}
		t.secure, t.ca = &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}, ca
		if !strings.Contains(addr, "://") {
			addr = "https://" + addr
		}
	} else if c.String("tls-cert") != "" {
		return nil, nil, errors.New("--tls-cert needs --tls-ca")
	}
	if c.String("admin-token") != "" && t.ca == "" {
		// The token would cross the network in the clear, to whatever
		// answers (a TLS node says so only after it has read it).
		return nil, nil, cli.Exit("the admin token is sent only over TLS: pass --tls-ca (the cluster CA); a cluster without TLS (--insecure, --dev) needs no token", 2)
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
	go func() { <-c.Context.Done(); cancel() }()
	return chipledgerv1connect.NewAdminServiceClient(&http.Client{Transport: t}, addr), ctx, nil
}

// adminAddr is the node the admin calls go to: the first --ledger address
// (repeatable or comma-separated, as the other commands take them, so that
// one CHIPLEDGER_LEDGER serves all).
func adminAddr(c *cli.Context) string {
	for _, a := range c.StringSlice("ledger") {
		for _, s := range strings.Split(a, ",") {
			if s = strings.TrimSpace(s); s != "" {
				return s
			}
		}
	}
	return ""
}

// adminError is the error of an admin call: what failed, and what to do
// when the flags are the cause (TLS, a refused token, no credentials).
func adminError(c *cli.Context, what string, err error) error {
	if hint := tlsHint(err); hint != err {
		return fmt.Errorf("%s: %w", what, hint)
	}
	if connect.CodeOf(err) == connect.CodePermissionDenied {
		switch {
		case c.String("admin-token") != "":
			return fmt.Errorf("%s: the node at %s refused the admin token: give the token whose hash the nodes have (--admin-token-hash), or a new one from \"chipledger tls token\" once its hash is on every node", what, adminAddr(c))
		case c.String("tls-cert") == "":
			return fmt.Errorf("%s: the node at %s takes this call only with admin credentials, and none were given: pass --tls-cert and --tls-key (an admin client certificate from the cluster CA, made with \"chipledger tls admin --dir DIR --name NAME\"), or --admin-token (or CHIPLEDGER_ADMIN_TOKEN; the token whose hash the nodes have, from \"chipledger tls token\"): %w",
				what, adminAddr(c), err)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// adminRequest wraps msg with the admin token, if any.
func adminRequest[T any](c *cli.Context, msg *T) *connect.Request[T] {
	req := connect.NewRequest(msg)
	if token := c.String("admin-token"); token != "" {
		req.Header().Set("Authorization", "Bearer "+token)
	}
	return req
}

func runAdminStatus(c *cli.Context) error {
	a, ctx, err := adminClient(c)
	if err != nil {
		return err
	}
	resp, err := a.Status(ctx, connect.NewRequest(&v1.StatusRequest{})) // open to all: no token
	if err != nil {
		return adminError(c, "status of "+adminAddr(c), err)
	}
	st := resp.Msg
	if c.Bool("json") {
		b, err := protojson.MarshalOptions{Multiline: true}.Marshal(st)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(c.App.Writer, "%s\n", b)
		return err
	}
	w := c.App.Writer
	fmt.Fprintf(w, "node %s: %s, term %d, leader %s (%s)\n", st.GetNodeId(), st.GetRole(), st.GetTerm(), st.GetLeaderId(), st.GetLeaderAddress())
	fmt.Fprintf(w, "tree size %d; raft applied %d, committed %d, last %d\n", st.GetTreeSize(), st.GetAppliedIndex(), st.GetCommitIndex(), st.GetLastLogIndex())
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tROLE\tSUFFRAGE\tTREE SIZE\tAPPLIED\tLAG\tRAFT\tAPI\tERROR")
	for _, p := range st.GetPeers() {
		fmt.Fprintln(tw, strings.Join(peerRow(p), "\t"))
	}
	return tw.Flush()
}

// peerRow is a peer's row of admin status. What a peer that did not
// answer would have reported is unknown ("-"), not zero: a lag of 0 reads
// as in sync.
func peerRow(p *v1.Peer) []string {
	size, applied, lag := fmt.Sprint(p.GetTreeSize()), fmt.Sprint(p.GetAppliedIndex()), fmt.Sprint(p.GetLag())
	if p.GetError() != "" {
		size, applied, lag = "-", "-", "-"
	}
	return []string{p.GetNodeId(), p.GetRole(), p.GetSuffrage(), size, applied, lag, p.GetRaftAddress(), p.GetApiAddress(), p.GetError()}
}

func runAdminRevoke(c *cli.Context) error {
	id, err := stationIDFlag(c)
	if err != nil {
		return err
	}
	req := &v1.RevokeStationRequest{StationId: id[:], Reason: c.String("reason")}
	if at := c.Timestamp("at"); at != nil {
		if at.UnixMilli() <= 0 {
			return fmt.Errorf("--at %s is before 1970", at.Format(time.RFC3339))
		}
		req.RevokedAtMs = uint64(at.UnixMilli())
	}
	a, ctx, err := adminClient(c)
	if err != nil {
		return err
	}
	resp, err := a.RevokeStation(ctx, adminRequest(c, req))
	if err != nil {
		return adminError(c, fmt.Sprintf("revoke station %x", id), err)
	}
	verb := "revoked"
	if resp.Msg.GetDuplicate() {
		verb = "already revoked"
	}
	fmt.Fprintf(c.App.Writer, "station %x %s at index %d\n", id, verb, resp.Msg.GetReceipt().GetIndex())
	return nil
}

// stationIDFlag reads the station ID from --station-id or --station-cert.
func stationIDFlag(c *cli.Context) ([32]byte, error) {
	var id [32]byte
	hexID, certFile := c.String("station-id"), c.String("station-cert")
	switch {
	case (hexID == "") == (certFile == ""):
		return id, cli.Exit("give exactly one of --station-id and --station-cert", exitUsage)
	case hexID != "":
		b, err := hex.DecodeString(hexID)
		if err != nil || len(b) != len(id) {
			return id, cli.Exit(fmt.Sprintf("--station-id %q: want 64 hex digits", hexID), exitUsage)
		}
		copy(id[:], b)
		return id, nil
	}
	data, err := os.ReadFile(certFile)
	if err != nil {
		return id, fmt.Errorf("--station-cert: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return id, fmt.Errorf("--station-cert %s: no PEM CERTIFICATE block", certFile)
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return id, fmt.Errorf("--station-cert %s: %w", certFile, err)
	}
	return ledger.StationID(block.Bytes), nil
}
