package socket

import (
	"bufio"
	"bytes"
	"io"
	"testing"
)

// clientFrame builds a masked client frame (RFC 6455 5.2) with a short payload.
func clientFrame(first byte, mask [4]byte, payload []byte) []byte {
	f := append([]byte{first, 0x80 | byte(len(payload))}, mask[:]...)
	for i, b := range payload {
		f = append(f, b^mask[i%4])
	}
	return f
}

func TestParseControlFrame(t *testing.T) {
	m := [4]byte{1, 2, 3, 4}
	ping := clientFrame(0x89, m, []byte("hi"))
	for _, tc := range []struct {
		name string
		data []byte
		n    int // 0: not taken
	}{
		{"ping", ping, len(ping)},
		{"ping then more", append(append([]byte{}, ping...), 0x81, 0x80), len(ping)},
		{"empty pong", clientFrame(0x8a, m, nil), 6},
		{"ping of 125 bytes", clientFrame(0x89, m, bytes.Repeat([]byte{'x'}, 125)), 131},
		{"incomplete ping", ping[:len(ping)-1], 0},
		{"header only", ping[:2], 0},
		{"text", clientFrame(0x81, m, []byte("hi")), 0},
		{"close", clientFrame(0x88, m, []byte{3, 232}), 0},
		{"unmasked ping", []byte{0x89, 0x00}, 0},
		{"fragmented ping", clientFrame(0x09, m, nil), 0},
		{"reserved bit", clientFrame(0xc9, m, nil), 0},
		{"ping with a 126 length", append([]byte{0x89, 0x80 | 126, 0, 126}, make([]byte, 130)...), 0},
		{"nothing", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, ok := parseControlFrame(bufio.NewReaderSize(bytes.NewReader(tc.data), readBufferSize))
			if ok != (tc.n > 0) || n != tc.n {
				t.Fatalf("parseControlFrame = %d, %v; want %d", n, ok, tc.n)
			}
			if ok && len(unmask(tc.data[:n])) != n-6 {
				t.Fatalf("unmasked %d bytes of a %d-byte frame", len(unmask(tc.data[:n])), n)
			}
		})
	}
	if got := unmask(ping); string(got) != "hi" {
		t.Fatalf("unmask(ping) = %q", got)
	}
}

// FuzzControlFrame: whatever bytes a client sends, the keepalive fast path takes only
// a whole, final, masked ping or pong of at most 125 bytes, and unmasks exactly its
// payload; everything else is left to gorilla.
func FuzzControlFrame(f *testing.F) {
	m := [4]byte{0xde, 0xad, 0xbe, 0xef}
	f.Add(clientFrame(0x89, m, []byte("keepalive")))
	f.Add(clientFrame(0x8a, m, nil))
	f.Add(clientFrame(0x81, m, []byte("text")))
	f.Add([]byte{0x89, 0xfe, 0, 126})
	f.Add([]byte{0x89})
	f.Fuzz(func(t *testing.T, data []byte) {
		n, ok := parseControlFrame(bufio.NewReaderSize(bytes.NewReader(data), readBufferSize))
		if !ok {
			if n != 0 {
				t.Fatalf("refused with length %d", n)
			}
			return
		}
		if n < 6 || n > 131 || n > len(data) {
			t.Fatalf("length %d of %d bytes", n, len(data))
		}
		f := data[:n]
		if f[0] != 0x89 && f[0] != 0x8a {
			t.Fatalf("took a frame with first byte %#x", f[0])
		}
		if f[1]&0x80 == 0 || int(f[1]&0x7f) != n-6 {
			t.Fatalf("took second byte %#x for a %d-byte frame", f[1], n)
		}
		payload := unmask(f)
		if again := clientFrame(f[0], [4]byte(f[2:6]), payload); !bytes.Equal(again, f) {
			t.Fatalf("payload %x does not re-encode to the frame %x", payload, f)
		}
	})
}

// fakeBuf is a peeker over fixed bytes.
type fakeBuf []byte

func (b fakeBuf) Peek(n int) ([]byte, error) {
	if n > len(b) {
		return b, io.ErrUnexpectedEOF
	}
	return b[:n], nil
}
func (b fakeBuf) Buffered() int { return len(b) }

// TestWholeFrame: a read is timed unless the buffer holds a whole final frame.
func TestWholeFrame(t *testing.T) {
	masked := func(fin byte, n int, extra ...byte) []byte {
		var h []byte
		switch {
		case n <= 125:
			h = []byte{fin | 0x1, 0x80 | byte(n)}
		case n <= 0xffff:
			h = []byte{fin | 0x1, 0x80 | 126, byte(n >> 8), byte(n)}
		default:
			h = []byte{fin | 0x1, 0x80 | 127, 0, 0, 0, 0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
		}
		h = append(h, 1, 2, 3, 4) // the mask
		return append(append(h, make([]byte, n)...), extra...)
	}
	for name, c := range map[string]struct {
		b    []byte
		want bool
	}{
		"small, whole":          {masked(0x80, 5), true},
		"small, one byte short": {masked(0x80, 5)[:10], false},
		"not final":             {masked(0, 5), false},
		"16-bit length, whole":  {masked(0x80, 300), true},
		"16-bit length, short":  {masked(0x80, 300)[:200], false},
		"64-bit length, whole":  {masked(0x80, 70000), true},
		"64-bit length, short":  {masked(0x80, 70000)[:60000], false},
		"whole, more after":     {masked(0x80, 5, 0x81, 0x85), true},
		"header only":           {[]byte{0x81}, false},
		"nothing":               {nil, false},
		"a huge length":         {[]byte{0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}, false},
	} {
		if got := wholeFrame(fakeBuf(c.b)); got != c.want {
			t.Errorf("%s: %v, want %v", name, got, c.want)
		}
	}
}

// FuzzWholeFrame: whatever a client sends, wholeFrame answers without a panic, and
// true only when the frame it describes fits in what is buffered.
func FuzzWholeFrame(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'})
	f.Add([]byte{0x81, 0xfe, 0x01, 0x00})
	f.Add([]byte{0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		if wholeFrame(fakeBuf(b)) && (len(b) < 2 || b[0]&0x80 == 0) {
			t.Fatalf("whole frame in %x", b)
		}
	})
}
