package remote

import (
	"context"
	"errors"
	"sync"
	"time"

	appv1 "github.com/gatehouse/gatehouse/gen/gatehouse/app/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errNoStream: the service does not implement Stream; make the call unary.
var errNoStream = errors.New("the consumer service has no Stream")

// noStreamFor is how long a service that answered Stream with UNIMPLEMENTED gets
// unary calls before Stream is tried again (it may have been upgraded).
const noStreamFor = time.Minute

// streamer carries a route's calls over one ConsumerService.Stream, opened on the
// first call and again after it fails, while the service implements it.
type streamer struct {
	api appv1.ConsumerServiceClient

	mu       sync.Mutex
	cur      *stream       // nil: none open
	opening  chan struct{} // closed once an opening stream is open (or failed to)
	openErr  error         // why the last opening failed
	noStream time.Time     // until then, calls are unary
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
	failed  error // set once the stream has failed: every pending call got it
}

type result struct {
	resp *appv1.StreamResponse
	err  error
}

// do makes one call on the stream and waits for its answer until ctx ends. It
// returns errNoStream when the call must be made unary instead.
func (st *streamer) do(ctx context.Context, req *appv1.StreamRequest) (*appv1.StreamResponse, error) {
	s, err := st.stream(ctx)
	if err != nil {
		return nil, err
	}
	st.mu.Lock()
	st.seq++
	req.Id = st.seq
	st.mu.Unlock()

	ch := make(chan result, 1)
	s.mu.Lock()
	if s.failed != nil {
		err := s.failed
		s.mu.Unlock()
		return nil, err
	}
	s.pending[req.Id] = ch
	s.mu.Unlock()
	select {
	case s.out <- req:
	case <-ctx.Done():
		s.forget(req.Id)
		return nil, ctx.Err()
	}
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-ctx.Done():
		s.forget(req.Id)
		return nil, ctx.Err()
	}
}

func (s *stream) forget(id uint64) {
	s.mu.Lock()
	delete(s.pending, id)
	s.mu.Unlock()
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
	return nil, status.Errorf(codes.Unavailable, "consumer service stream: %v", st.openErr)
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
	s := &stream{cancel: cancel, out: make(chan *appv1.StreamRequest, 256), pending: map[uint64]chan result{}}
	st.cur = s
	go s.send(sc)
	go st.receive(s, sc)
}

func (s *stream) send(sc appv1.ConsumerService_StreamClient) {
	for {
		select {
		case req := <-s.out:
			if sc.Send(req) != nil {
				return // the receiver hears why
			}
		case <-sc.Context().Done():
			return
		}
	}
}

// receive hands each answer to its call; when the stream fails it fails every call
// in flight, and the next call opens another (or, for UNIMPLEMENTED, is unary).
func (st *streamer) receive(s *stream, sc appv1.ConsumerService_StreamClient) {
	for {
		resp, err := sc.Recv()
		if err != nil {
			if status.Code(err) == codes.Unimplemented {
				err = errNoStream
			} else {
				err = status.Errorf(codes.Unavailable, "consumer service stream: %v", err)
			}
			st.mu.Lock()
			if st.cur == s {
				st.cur = nil
			}
			if errors.Is(err, errNoStream) {
				st.noStream = time.Now().Add(noStreamFor)
			}
			st.mu.Unlock()
			s.mu.Lock()
			s.failed = err
			for id, ch := range s.pending {
				ch <- result{err: err}
				delete(s.pending, id)
			}
			s.mu.Unlock()
			s.cancel()
			return
		}
		s.mu.Lock()
		ch := s.pending[resp.GetId()]
		delete(s.pending, resp.GetId())
		s.mu.Unlock()
		if ch != nil {
			ch <- result{resp: resp}
		}
	}
}

// close ends the stream, if open.
func (st *streamer) close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.closed = true
	if st.cur != nil {
		st.cur.cancel()
		st.cur = nil
	}
}

// failure is the error a stream answer carries, if any.
func failure(r *appv1.StreamResponse) error {
	if e := r.GetError(); e != nil {
		code := codes.Code(e.GetCode())
		if code == codes.OK {
			code = codes.Unknown
		}
		return status.Error(code, e.GetMessage())
	}
	return nil
}
