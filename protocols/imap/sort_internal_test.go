package imap

import "testing"

func TestBaseSubject(t *testing.T) {
	for in, want := range map[string]string{
		"[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)": "b",
		"Re: re: RE: hello":                       "hello",
		"[fwd: Re: x]":                            "x",
		"  spaced \t  out  ":                      "spaced out",
		"[only a blob]":                           "[only a blob]",
		"Re [x]: y":                               "y",
		"Rehearsal":                               "Rehearsal",
	} {
		if got := baseSubject(in); got != want {
			t.Errorf("baseSubject(%q) = %q, want %q", in, got, want)
		}
	}
}
