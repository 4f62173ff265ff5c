package loadgen

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"time"
)

// maxBodyLine is the longest body line written, without its CRLF; RFC 5322
// asks for at most 78.
const maxBodyLine = 72

// subjectWords are the words subjects are made of; a SUBJECT search for one
// of them matches about one message in eight.
var subjectWords = []string{
	"invoice", "meeting", "report", "holiday", "budget", "release", "review", "outage",
	"schedule", "contract", "upgrade", "newsletter", "feedback", "proposal", "reminder", "summary",
}

// bodyWords are the words bodies are made of.
var bodyWords = []string{
	"the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
	"on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
	"had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
	"been", "if", "more", "when", "will", "would", "who", "so", "no", "mailbox", "server",
	"replication", "message", "delivery", "quarterly", "numbers", "please", "attached", "thanks",
	"regards", "tomorrow", "morning", "afternoon", "agenda", "question", "answer", "customer",
}

// senders is how many distinct From addresses messages come from
// (sender1..senderN@example.org); a FROM search for one matches about one
// message in senders.
const senders = 20

// messageGen builds RFC 5322 messages of a fixed size: plain text, CRLF line
// endings, lines of at most 78 characters and a Message-ID unique to the run.
// Its methods are safe to call concurrently when each caller brings its own
// rand.Rand and buffer.
type messageGen struct {
	size   int
	domain string
	runID  string
}

func newMessageGen(size int, domain string, rng *rand.Rand) *messageGen {
	return &messageGen{
		size:   size,
		domain: domain,
		runID:  fmt.Sprintf("%x.%x", time.Now().UnixNano(), rng.Uint32()),
	}
}

// build writes into buf one message to the address to, numbered seq by the
// session sess, and returns buf's bytes. The message is exactly g.size bytes
// unless its headers alone are longer, in which case it is the headers and
// one short body line.
func (g *messageGen) build(buf *bytes.Buffer, rng *rand.Rand, sess int, seq uint64, to string) []byte {
	buf.Reset()
	w1 := subjectWords[rng.IntN(len(subjectWords))]
	w2 := subjectWords[rng.IntN(len(subjectWords))]
	fmt.Fprintf(buf, "From: Sender %[1]d <sender%[1]d@example.org>\r\n", 1+rng.IntN(senders))
	fmt.Fprintf(buf, "To: <%s>\r\n", to)
	fmt.Fprintf(buf, "Subject: %s and %s, number %d\r\n", w1, w2, seq)
	fmt.Fprintf(buf, "Date: %s\r\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(buf, "Message-ID: <%s.%d.%d@bench.%s>\r\n", g.runID, sess, seq, g.domain)
	buf.WriteString("MIME-Version: 1.0\r\n")
	buf.WriteString("Content-Type: text/plain; charset=us-ascii\r\n")
	buf.WriteString("Content-Transfer-Encoding: 7bit\r\n")
	buf.WriteString("\r\n")

	remaining := g.size - buf.Len()
	// Whole lines while more than one longest line is left; then one last
	// line of the exact length (between 5 and 78 characters).
	var line []byte
	for remaining > maxBodyLine+2+6 {
		line = wordLine(line[:0], rng, maxBodyLine)
		buf.Write(line)
		buf.WriteString("\r\n")
		remaining -= len(line) + 2
	}
	n := remaining - 2
	if n < 1 {
		n = 1
	}
	line = wordLine(line[:0], rng, n)
	for len(line) < n {
		line = append(line, '.')
	}
	if line[len(line)-1] == ' ' {
		line[len(line)-1] = '.'
	}
	buf.Write(line)
	buf.WriteString("\r\n")
	return buf.Bytes()
}

// wordLine appends to b random words separated by spaces, at most max
// characters in all, cutting the last word if the line would stay short.
func wordLine(b []byte, rng *rand.Rand, max int) []byte {
	for len(b) < max {
		w := bodyWords[rng.IntN(len(bodyWords))]
		if len(b) > 0 {
			if len(b)+1+len(w) > max {
				if max-len(b) > 8 {
					// Close to a short line: cut the word rather than
					// leave a gap the padding would fill with dots.
					b = append(b, ' ')
					b = append(b, w[:min(len(w), max-len(b))]...)
				}
				break
			}
			b = append(b, ' ')
		}
		b = append(b, w[:min(len(w), max-len(b))]...)
	}
	return b
}
