package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/internal/clustertls"
)

// tlsCommand is `chipledger tls`: TLS material for a cluster.
func tlsCommand() *cli.Command {
	dirFlag := func() cli.Flag {
		return &cli.StringFlag{Name: "dir", Required: true, EnvVars: env("tls-dir"), Usage: "the cluster's TLS `DIR`"}
	}
	return &cli.Command{
		Name:  "tls",
		Usage: "make the cluster CA, node and admin certificates, and admin tokens",
		Description: `For operators without a PKI of their own. Nodes run Raft over mutual TLS 1.3
with peers whose certificates chain to the cluster CA, and serve the API over
TLS; admin calls (join, leave, leadership transfer, station revocation) need a client
certificate from the cluster CA or the admin token.`,
		Subcommands: []*cli.Command{
			{
				Name:      "init",
				Usage:     "create the cluster CA (ca.pem, ca.key) in --dir",
				UsageText: "chipledger tls init --dir tls",
				Flags:     []cli.Flag{dirFlag()},
				Action: func(c *cli.Context) error {
					if err := clustertls.InitCA(c.String("dir")); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "cluster CA in %s; give %s to every node (--tls-ca) and client; keep ca.key offline\n",
						c.String("dir"), filepath.Join(c.String("dir"), clustertls.CACertFile))
					return nil
				},
			},
			{
				Name:      "node",
				Usage:     "issue a node certificate (<id>.pem, <id>.key) naming the node's addresses",
				UsageText: "chipledger tls node --dir tls --id n1 --host 10.0.0.1 --host n1.example.com",
				Flags: []cli.Flag{
					dirFlag(),
					&cli.StringFlag{Name: "id", Required: true, Usage: "the node's `ID`"},
					&cli.StringSliceFlag{Name: "host", Required: true, Usage: "an IP address or DNS name peers and clients reach the node at (repeatable)"},
				},
				Action: func(c *cli.Context) error {
					dir, id := c.String("dir"), c.String("id")
					if err := clustertls.IssueNode(dir, id, c.StringSlice("host")); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "node certificate %s, key %s\n", filepath.Join(dir, id+".pem"), filepath.Join(dir, id+".key"))
					return nil
				},
			},
			{
				Name:      "admin",
				Usage:     "issue an admin client certificate (admin-<name>.pem, .key)",
				UsageText: "chipledger tls admin --dir tls --name alice",
				Flags:     []cli.Flag{dirFlag(), &cli.StringFlag{Name: "name", Required: true, Usage: "the admin's `NAME`"}},
				Action: func(c *cli.Context) error {
					dir, name := c.String("dir"), c.String("name")
					if err := clustertls.IssueAdmin(dir, name); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "admin certificate %s\n", filepath.Join(dir, "admin-"+name+".pem"))
					return nil
				},
			},
			{
				Name:      "token",
				Usage:     "make a random admin token and print it and its hash (for --admin-token-hash)",
				UsageText: "chipledger tls token",
				Action: func(c *cli.Context) error {
					b := make([]byte, 32)
					if _, err := rand.Read(b); err != nil {
						return err
					}
					token := base64.RawURLEncoding.EncodeToString(b)
					sum := sha256.Sum256([]byte(token))
					fmt.Fprintf(c.App.Writer, "token  %s\nhash   %s\n", token, hex.EncodeToString(sum[:]))
					fmt.Fprintln(c.App.ErrWriter, "give the hash to the nodes (--admin-token-hash); keep the token secret: nodes store only its hash")
					return nil
				},
			},
		},
	}
}
