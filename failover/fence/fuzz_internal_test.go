package fence

import (
	"maps"
	"strings"
	"testing"
	"unicode"
)

// What an Agent sends, ServeAgent reads back: the options NewAgent accepts
// survive the trip, but for what fence-agents themselves trim (blanks at
// the end of a line, double quotes around a value).
func FuzzAgentInputRoundTrip(f *testing.F) {
	f.Add("port", "node-b")
	f.Add("password", `"quoted"`)
	f.Add("ip", "10.0.0.2 ")
	f.Add("x", "a=b=c")
	f.Add("passwd_script", "#!not a comment")
	f.Fuzz(func(t *testing.T, key, value string) {
		opts := map[string]string{key: value, "port": "node-b"}
		if checkOption(key, value) != nil {
			return
		}
		got, err := parseAgentInput(strings.NewReader(agentInput("off", opts)))
		if err != nil {
			return // too long
		}
		want := map[string]string{"action": "off", "port": "node-b"}
		v := strings.TrimRightFunc(value, unicode.IsSpace)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		want[key] = v
		if !maps.Equal(got, want) {
			t.Fatalf("sent %q, read back %q, want %q", agentInput("off", opts), got, want)
		}
	})
}

func FuzzParseAgentInput(f *testing.F) {
	f.Add("action=off\nport=node-b\n")
	f.Add("# comment\n\noption=status\n  ip = 1 \n")
	f.Add("action\n=\n==\n\"\n")
	f.Fuzz(func(t *testing.T, in string) {
		opts, err := parseAgentInput(strings.NewReader(in))
		if err != nil {
			return
		}
		for k, v := range opts {
			if strings.Contains(k, "\n") || strings.Contains(v, "\n") || strings.HasPrefix(k, "#") {
				t.Fatalf("read %q=%q from %q", k, v, in)
			}
		}
		if _, ok := opts["option"]; ok {
			t.Fatalf("option= kept as an option: %q", opts)
		}
	})
}

func FuzzStatState(f *testing.F) {
	f.Add("1234 (sleep) S 1 1234 1234 0 -1")
	f.Add("1234 (a) b) c) Z 1")
	f.Add("1234 (x)")
	f.Fuzz(func(t *testing.T, stat string) {
		if state, ok := statState(stat); ok && !strings.Contains(stat, ") "+string([]byte{state})) {
			t.Fatalf("%q: state %q", stat, state)
		}
	})
}

func TestStatState(t *testing.T) {
	for stat, want := range map[string]byte{
		"1234 (sleep) S 1 1234":          'S',
		"1234 (a) b) (c) Z 1 1234":       'Z',
		"1234 (twinbox serve) R 1 1 1 1": 'R',
	} {
		if got, ok := statState(stat); !ok || got != want {
			t.Errorf("%q: %q, %v; want %q", stat, got, ok, want)
		}
	}
	for _, bad := range []string{"", "1234", "1234 (x)", "1234 (x)S"} {
		if _, ok := statState(bad); ok {
			t.Errorf("%q: a state read", bad)
		}
	}
}

func TestTrimOutput(t *testing.T) {
	for in, want := range map[string]string{
		"":                            "",
		"\n\n  \n":                    "",
		"Failed: x\n":                 "Failed: x",
		"a\r\n\n  b \n\x1b[31mc\x00":  "a; b; [31mc",
		"bad \xff utf8":               "bad \uFFFD utf8",
		strings.Repeat("é", 400) + "": "..." + strings.Repeat("é", 150),
	} {
		if got := trimOutput(in, outputShow); got != want {
			t.Errorf("trimOutput(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{keep: 10}
	for i := range 100 {
		b.Write([]byte{'a' + byte(i%26)})
	}
	if got := b.String(); got != "mnopqrstuv" || len(b.b) > 20 {
		t.Errorf("kept %q (%d bytes held)", got, len(b.b))
	}
}
