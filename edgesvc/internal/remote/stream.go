package remote

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	appv1 "github.com/gatehouse/gatehouse/gen/gatehouse/app/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errNoStream: the service does not implement Stream; make the call unary.
var errNoStream = errors.New("the consumer service has no Stream")

// unsent is the error of a call that failed before it went out to the service: it
// may be made again without the service seeing it twice.
type unsent struct{ error }

func (u unsent) Unwrap() error { return u.error }

// noStreamFor is how long a service that answered Stream with UNIMPLEMENTED (or
// whose streams keep failing before any answer) gets unary calls before Stream is
// tried again (it may have been upgraded or mended).
const noStreamFor = time.Minute

// emptyFailures is how many streams in a row may fail without one answer before the
// route goes unary for noStreamFor.
const emptyFailures = 3

// streamer carries a route's calls over one ConsumerService.Stream, opened on the
// first call and again after it fails, while the service implements it.
type streamer struct {
	api     appv1.ConsumerServiceClient
	timeout time.Duration // the route's deadline: a stream that answers nothing for as long is stuck

	mu       sync.Mutex
	cur      *stream       // nil: none open
	opening  chan struct{} // closed once an opening stream is open (or failed to)
	openErr  error         // why the last opening failed
	noStream time.Time     // until then, calls are unary
	empty    int           // streams in a row that failed before any answer
	closed   bool
	seq      uint64
}

// stream is one open Stream: calls go out through its sender goroutine (a stream's
// Send must not be called concurrently, and may block on flow control) and answers
// come back through its receiver, matched by id.
type stream struct {
	cancel  context.CancelFunc
	out     chan *appv1.StreamRequest
	mu      sync.Mutex
	pending map[uint64]chan result
	sent    map[uint64]bool // pending calls that have gone out
	failed  error           // set once the stream has failed: every pending call got it
	heard   time.Time       // when the last answer came (or the stream opened)
	answers int             // answers received
	retired bool            // takes no new calls; closed for sending once its calls are answered
	ended   bool            // closed for sending
}

type result struct {
	resp *appv1.StreamResponse
	err  error
}

// do makes one call on the stream and waits for its answer until ctx ends. It
// returns errNoStream when the call must be made unary instead.
func (st *streamer) do(ctx context.Context, req *appv1.StreamRequest) (*appv1.StreamResponse, error) {
	st.mu.Lock()
	st.seq++
	req.Id = st.seq
	st.mu.Unlock()
	ch := make(chan result, 1)
	var s *stream
	for {
		var err error
		if s, err = st.stream(ctx); err != nil {
			return nil, err
		}
		s.mu.Lock()
		if s.failed != nil {
			err := s.failed
			s.mu.Unlock()
			return nil, unsent{err}
		}
		if !s.ended { // else it was retired meanwhile: take the next
			s.pending[req.Id] = ch
			s.mu.Unlock()
			break
		}
		s.mu.Unlock()
	}
	select {
	case s.out <- req:
	case r := <-ch: // the stream failed meanwhile
		return r.resp, r.err
	case <-ctx.Done():
		st.abandon(s, req.Id)
		return nil, ctx.Err()
	}
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-ctx.Done():
		st.abandon(s, req.Id)
		return nil, ctx.Err()
	}
}

// abandon forgets a call whose caller stopped waiting: the sender skips it if it has
// not gone out yet, else the service is told to cancel it. A stream that has
// answered nothing for twice the route's deadline while calls wait is taken for
// stuck and replaced.
func (st *streamer) abandon(s *stream, id uint64) {
	s.mu.Lock()
	delete(s.pending, id)
	if s.sent[id] && !s.ended {
		select { // tell the service; if the stream is backed up, it will learn soon enough
		case s.out <- &appv1.StreamRequest{Call: &appv1.StreamRequest_Cancel{Cancel: id}}:
		default:
		}
	}
	delete(s.sent, id)
	s.endIfDone()
	stuck := s.failed == nil && time.Since(s.heard) > 2*st.timeout
	s.mu.Unlock()
	if stuck {
		st.fail(s, status.Error(codes.Unavailable, "consumer service stream answered nothing within the deadline: replaced"))
	}
}

// stream returns the open stream, opening one if none is: on a goroutine of its own
// (opening waits for the connection to the service), so that a caller waits no
// longer than its ctx. It returns errNoStream when calls must be unary.
func (st *streamer) stream(ctx context.Context) (*stream, error) {
	st.mu.Lock()
	if st.closed || time.Now().Before(st.noStream) {
		st.mu.Unlock()
		return nil, errNoStream
	}
	if s := st.cur; s != nil {
		st.mu.Unlock()
		return s, nil
	}
	if st.opening == nil {
		st.opening = make(chan struct{})
		go st.open(st.opening)
	}
	opening := st.opening
	st.mu.Unlock()
	select {
	case <-opening:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case st.cur != nil:
		return st.cur, nil
	case st.closed || time.Now().Before(st.noStream):
		return nil, errNoStream
	}
	if st.openErr == nil { // it opened, and failed before this caller looked
		return nil, unsent{status.Error(codes.Unavailable, "consumer service stream failed as it opened")}
	}
	return nil, unsent{status.Errorf(status.Code(st.openErr), "consumer service stream: %v", st.openErr)}
}

// open opens a stream, then closes done.
func (st *streamer) open(done chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	sc, err := st.api.Stream(ctx)
	st.mu.Lock()
	defer st.mu.Unlock()
	defer close(done)
	st.opening = nil
	if err != nil || st.closed {
		cancel()
		st.openErr = err
		return
	}
	st.openErr = nil
	s := &stream{cancel: cancel, out: make(chan *appv1.StreamRequest, 256), pending: map[uint64]chan result{}, sent: map[uint64]bool{}, heard: time.Now()}
	st.cur = s
	go s.send(sc)
	go st.receive(s, sc)
}

// send sends the calls still waited for, in order; a nil request closes the stream
// for sending (the service's Recv then ends, and it ends the stream).
func (s *stream) send(sc appv1.ConsumerService_StreamClient) {
	for {
		select {
		case req := <-s.out:
			if req == nil {
				_ = sc.CloseSend()
				return
			}
			if _, ok := req.GetCall().(*appv1.StreamRequest_Cancel); !ok {
				s.mu.Lock()
				_, waited := s.pending[req.Id]
				if waited {
					s.sent[req.Id] = true
				}
				s.mu.Unlock()
				if !waited {
					continue // its caller gave up: the service is spared it
				}
			}
			if sc.Send(req) != nil {
				return // the receiver hears why
			}
		case <-sc.Context().Done():
			return
		}
	}
}

// receive hands each answer to its call, until the stream fails.
func (st *streamer) receive(s *stream, sc appv1.ConsumerService_StreamClient) {
	for {
		resp, err := sc.Recv()
		if err != nil {
			st.fail(s, err)
			return
		}
		s.mu.Lock()
		s.heard = time.Now()
		s.answers++
		ch := s.pending[resp.GetId()]
		delete(s.pending, resp.GetId())
		delete(s.sent, resp.GetId())
		s.endIfDone()
		s.mu.Unlock()
		if ch != nil {
			ch <- result{resp: resp}
		}
	}
}

// retire stops giving the current stream new calls; it closes once its calls are
// answered.
func (st *streamer) retire() {
	st.mu.Lock()
	s := st.cur
	st.cur = nil
	st.mu.Unlock()
	if s != nil {
		s.mu.Lock()
		s.retired = true
		s.endIfDone()
		s.mu.Unlock()
	}
}

// endIfDone closes a retired stream for sending once no call waits on it (s.mu held).
func (s *stream) endIfDone() {
	if s.retired && !s.ended && len(s.pending) == 0 && s.failed == nil {
		s.ended = true
		select {
		case s.out <- nil:
		default: // full of calls nobody waits for: cancel it instead
			go s.cancel()
		}
	}
}

// fail ends s for err, failing every call it carries; the next call opens another
// stream, or, for a service without Stream (or whose streams keep failing before
// any answer), goes unary for a while. A retired stream just ends.
func (st *streamer) fail(s *stream, err error) {
	s.mu.Lock()
	if s.failed != nil {
		s.mu.Unlock()
		return
	}
	if s.retired && len(s.pending) == 0 {
		s.failed = err
		s.mu.Unlock()
		s.cancel()
		return
	}
	answered := s.answers > 0
	switch {
	case status.Code(err) == codes.Unimplemented && !answered:
		err = errNoStream // the service never saw these calls: they may be made unary
	case errors.Is(err, io.EOF):
		err = status.Error(codes.Unavailable, "consumer service ended the stream")
	case status.Code(err) == codes.Unknown || status.Code(err) == codes.Canceled:
		err = status.Errorf(codes.Unavailable, "consumer service stream: %v", err)
	}
	s.failed = err
	for id, ch := range s.pending {
		if s.sent[id] {
			ch <- result{err: err}
		} else {
			ch <- result{err: unsent{err}}
		}
		delete(s.pending, id)
	}
	clear(s.sent)
	s.mu.Unlock()
	s.cancel()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.cur == s {
		st.cur = nil
	}
	switch {
	case errors.Is(err, errNoStream):
		st.noStream = time.Now().Add(noStreamFor)
	case answered:
		st.empty = 0
	default:
		if st.empty++; st.empty >= emptyFailures {
			st.empty = 0
			st.noStream = time.Now().Add(noStreamFor)
		}
	}
}

// close ends the stream, if open.
func (st *streamer) close() {
	st.mu.Lock()
	st.closed = true
	s := st.cur
	st.cur = nil
	st.mu.Unlock()
	if s != nil {
		s.cancel()
	}
}

// answer returns what a stream answer carries: its error, or that it carries no
// result of the kind asked for.
func answer[T any](r *appv1.StreamResponse, got *T) (*T, error) {
	if e := r.GetError(); e != nil {
		code := codes.Code(e.GetCode())
		if code == codes.OK {
			code = codes.Unknown
		}
		return nil, status.Error(code, e.GetMessage())
	}
	if got == nil {
		return nil, status.Errorf(codes.Internal, "the consumer service answered call %d with no result of the kind asked", r.GetId())
	}
	return got, nil
}
