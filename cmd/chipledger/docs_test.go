package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// docFiles are the documents whose command lines TestDocsNameOnlyRealCommandsAndFlags checks.
func docFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"../../README.md"}
	for _, pattern := range []string{"../../docs/*.md", "../../deploy/*"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	return files
}

var (
	// invocation finds "chipledger" (or ./chipledger) and what follows it on
	// a line.
	invocation = regexp.MustCompile(`(?:^|[\s(` + "`" + `/])chipledger((?:[ \t]+[^\s|&;#` + "`" + `)]+)*)`)
	flagName   = regexp.MustCompile(`^--([a-z][a-z0-9-]*)`)
	envVar     = regexp.MustCompile(`\bCHIPLEDGER_[A-Z][A-Z0-9_]*\b`)
)

// testOnlyEnv are environment variables the documents name that tests and
// benchmarks read, not flags.
var testOnlyEnv = []string{"CHIPLEDGER_BENCH_LEAVES", "CHIPLEDGER_BENCH_10M", "CHIPLEDGER_TEST_LOG",
	"CHIPLEDGER_CHAOS_SEED", "CHIPLEDGER_CHAOS_DURATION", "CHIPLEDGER_BENCH_CPUPROFILE"}

// TestDocsNameOnlyRealCommandsAndFlags reads every command line in the
// README, docs/ and deploy/ and checks that its commands and flags exist,
// and that every CHIPLEDGER_ environment variable they name is a flag's.
func TestDocsNameOnlyRealCommandsAndFlags(t *testing.T) {
	app := newApp(io.Discard, io.Discard, nil)
	envs := map[string]bool{}
	var collect func(flags []cli.Flag, cmds []*cli.Command)
	collect = func(flags []cli.Flag, cmds []*cli.Command) {
		for _, f := range flags {
			if ev, ok := f.(interface{ GetEnvVars() []string }); ok {
				for _, e := range ev.GetEnvVars() {
					envs[e] = true
				}
			}
		}
		for _, c := range cmds {
			collect(c.Flags, c.Subcommands)
		}
	}
	collect(app.Flags, app.Commands)

	checked := 0
	for _, file := range docFiles(t) {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		// Shell lines continued with a backslash are one command.
		text := strings.ReplaceAll(string(b), "\\\n", " ")
		for n, line := range strings.Split(text, "\n") {
			for _, m := range invocation.FindAllStringSubmatch(line, -1) {
				if checkInvocation(t, app, strings.Fields(m[1]), file, n+1) {
					checked++
				}
			}
			for _, e := range envVar.FindAllString(line, -1) {
				if !envs[e] && !slices.Contains(testOnlyEnv, e) {
					t.Errorf("%s:%d: %s is no flag's environment variable", file, n+1, e)
				}
			}
		}
	}
	t.Logf("%d command lines checked", checked)
	if checked < 30 {
		t.Fatalf("only %d command lines found in the docs: the parser is broken", checked)
	}
}

// checkInvocation resolves the words after "chipledger" to a command and
// checks the flags that follow. Prose ("chipledger escrows …") names no
// command and is skipped; it reports whether it checked a command.
func checkInvocation(t *testing.T, app *cli.App, words []string, file string, line int) bool {
	t.Helper()
	flags := slices.Clone(app.Flags)
	cmds := app.Commands
	var path []string
	i := 0
	for ; i < len(words); i++ {
		if f := flagName.FindStringSubmatch(words[i]); f != nil && len(path) == 0 {
			continue // a global flag before the command
		}
		var next *cli.Command
		for _, c := range cmds {
			if c.HasName(words[i]) {
				next = c
			}
		}
		if next == nil {
			break
		}
		path = append(path, next.Name)
		flags = append(flags, next.Flags...)
		cmds = next.Subcommands
	}
	if len(path) == 0 {
		return false
	}
	for _, w := range words {
		f := flagName.FindStringSubmatch(w)
		if f == nil {
			continue
		}
		if !slices.ContainsFunc(flags, func(fl cli.Flag) bool { return slices.Contains(fl.Names(), f[1]) }) &&
			f[1] != "help" {
			t.Errorf("%s:%d: chipledger %s has no flag --%s", file, line, strings.Join(path, " "), f[1])
		}
	}
	return true
}
