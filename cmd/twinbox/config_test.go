package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigProblemsAtOnce: one run reports every problem of a config
// file: an unknown key with the nearest known one, values of the wrong
// kind, and what validation finds, instead of the first alone.
func TestConfigProblemsAtOnce(t *testing.T) {
	f := filepath.Join(t.TempDir(), "twinbox.toml")
	os.WriteFile(f, []byte("imap_adr = \"127.0.0.1:1\"\nfailover = \"yes\"\nkeepalive = 200\nlog_level = \"loud\"\n"), 0o600)
	_, err := loadConfig("serve", []string{"-c", f}, &bytes.Buffer{}, "")
	if err == nil {
		t.Fatal("a bad config file loaded")
	}
	for _, want := range []string{"unknown setting imap_adr (did you mean imap_addr?)", `failover: "yes" is not true or false`,
		"keepalive:", "log_level"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q:\n%v", want, err)
		}
	}
}

// TestFlagsAsAPersonTypesThem: a boolean flag needs no "=true" (and does
// not swallow the next flag), -h shows the defaults, and an unknown flag
// is one line with a suggestion, not the whole usage.
func TestFlagsAsAPersonTypesThem(t *testing.T) {
	data := t.TempDir()
	c, err := loadConfig("serve", []string{"--allow-insecure-auth", "--data", data}, &bytes.Buffer{}, "")
	if err != nil {
		t.Fatal(err)
	}
	if !c.InsecureAuth || c.Data != data {
		t.Fatalf("--allow-insecure-auth --data %s: insecure %v, data %q", data, c.InsecureAuth, c.Data)
	}
	if c, err = loadConfig("serve", []string{"--allow-insecure-auth=false", "--data", data}, &bytes.Buffer{}, ""); err != nil || c.InsecureAuth {
		t.Fatalf("--allow-insecure-auth=false: %v %v", c.InsecureAuth, err)
	}

	var help bytes.Buffer
	if _, err := loadConfig("serve", []string{"-h"}, &help, "usage: twinbox serve"); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	for _, want := range []string{"usage: twinbox serve", "(default 127.0.0.1:1143)", "(default 1m0s)", "-allow-insecure-auth\n"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("-h lacks %q:\n%s", want, help.String())
		}
	}

	var out bytes.Buffer
	_, err = loadConfig("serve", []string{"--imap-adr", "x"}, &out, "usage: twinbox serve")
	if err == nil || !strings.Contains(err.Error(), "unknown flag --imap-adr (did you mean --imap-addr?)") {
		t.Fatalf("unknown flag: %v", err)
	}
	if out.Len() != 0 || strings.Count(err.Error(), "\n") != 0 {
		t.Fatalf("an unknown flag printed %d bytes of usage; error %q", out.Len(), err)
	}
}
