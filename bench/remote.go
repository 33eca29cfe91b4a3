package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"

	appv1 "github.com/gatehouse/gatehouse/gen/gatehouse/app/v1"
	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// consumerEcho is the consumer service both remote-consumer sides call: Connect
// accepts, Receive answers "You said: X" as one reply.
func consumerEcho(args []string) error {
	fs := flag.NewFlagSet("consumer-echo", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	stream := fs.Bool("stream", false, "implement Stream too (else the edge makes unary calls)")
	_ = fs.Parse(args)
	g := grpc.NewServer()
	if *stream {
		appv1.RegisterConsumerServiceServer(g, streaming{})
	} else {
		appv1.RegisterConsumerServiceServer(g, echoConsumer{})
	}
	return serveUntilSignal(*listen, g.Serve)
}

type echoConsumer struct {
	appv1.UnimplementedConsumerServiceServer
}

func (echoConsumer) Connect(context.Context, *appv1.ConnectRequest) (*appv1.ConnectResponse, error) {
	return &appv1.ConnectResponse{}, nil
}

func (echoConsumer) Receive(_ context.Context, req *appv1.ReceiveRequest) (*appv1.ReceiveResponse, error) {
	return &appv1.ReceiveResponse{Actions: []*appv1.Action{{Action: &appv1.Action_Reply{Reply: &appv1.Reply{
		Payload: &appv1.Reply_Text{Text: "You said: " + req.GetText()},
	}}}}}, nil
}

func (echoConsumer) Disconnect(context.Context, *appv1.DisconnectRequest) (*appv1.DisconnectResponse, error) {
	return &appv1.DisconnectResponse{}, nil
}

// streaming is echoConsumer with Stream, answering each call as it comes.
type streaming struct{ echoConsumer }

func (s streaming) Stream(ss appv1.ConsumerService_StreamServer) error {
	for {
		req, err := ss.Recv()
		if err != nil {
			return nil
		}
		resp := &appv1.StreamResponse{Id: req.GetId()}
		switch c := req.GetCall().(type) {
		case *appv1.StreamRequest_Connect:
			r, _ := s.Connect(ss.Context(), c.Connect)
			resp.Result = &appv1.StreamResponse_Connect{Connect: r}
		case *appv1.StreamRequest_Receive:
			r, _ := s.Receive(ss.Context(), c.Receive)
			resp.Result = &appv1.StreamResponse_Receive{Receive: r}
		case *appv1.StreamRequest_Disconnect:
			r, _ := s.Disconnect(ss.Context(), c.Disconnect)
			resp.Result = &appv1.StreamResponse_Disconnect{Disconnect: r}
		}
		if err := ss.Send(resp); err != nil {
			return err
		}
	}
}

// baselineProxy is the bare WebSocket→gRPC proxy a remote consumer is compared with:
// a gorilla server that hands each message to the consumer service (one gRPC
// connection, a unary Receive per message, as the edge does) and writes the reply
// back; no sign-in, no registry.
func baselineProxy(args []string) error {
	fs := flag.NewFlagSet("baseline-proxy", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	consumer := fs.String("consumer", "", "the consumer service's address")
	_ = fs.Parse(args)
	cc, err := grpc.NewClient(*consumer, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	api := appv1.NewConsumerServiceClient(cc)
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	var ids atomic.Uint64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		conn := &appv1.Connection{Id: fmt.Sprint("bare.", ids.Add(1)), Path: r.URL.Path}
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			resp, err := api.Receive(r.Context(), &appv1.ReceiveRequest{Connection: conn, Payload: &appv1.ReceiveRequest_Text{Text: string(msg)}})
			if err != nil {
				return
			}
			for _, a := range resp.GetActions() {
				if err := ws.WriteMessage(websocket.TextMessage, []byte(a.GetReply().GetText())); err != nil {
					return
				}
			}
		}
	})
	return serveUntilSignal(*listen, func(l net.Listener) error { return http.Serve(l, h) })
}

// remoteRoutes writes the routes file that sends the edge's /ws/remote/ to unary
// and /ws/remote-stream/ to stream.
func (w *world) remoteRoutes(unary, stream string) (string, error) {
	path := filepath.Join(w.dir, "routes.json")
	return path, os.WriteFile(path, []byte(fmt.Sprintf(`{"routes": [{"path": "/ws/remote/", "consumer": %q}, {"path": "/ws/remote-stream/", "consumer": %q}]}`, unary, stream)), 0o644)
}

// benchRemote measures echo round trips through a remote consumer (the edge calling
// the consumer service for each message) against the bare proxy to the same service,
// 32 connections each; the edge's in-process echo is measured beside them for scale.
func (w *world) benchRemote(r *report) error {
	const n = 32
	bc, err := openConns(n, func(int) (string, http.Header) { return "ws://" + w.bareProxy.addr + "/ws/", nil }, nil)
	if err != nil {
		return err
	}
	defer closeAll(bc)
	gc, err := openConns(n, func(i int) (string, http.Header) { return "ws://" + w.edge.addr + "/ws/remote/", w.cookie(i) }, nil)
	if err != nil {
		return err
	}
	defer closeAll(gc)
	sc, err := openConns(n, func(i int) (string, http.Header) { return "ws://" + w.edge.addr + "/ws/remote-stream/", w.cookie(i) }, nil)
	if err != nil {
		return err
	}
	defer closeAll(sc)
	bare := func() measurement {
		return measure([]int{w.bareProxy.pid(), w.consumer.pid()}, func() sample { return echoes(bc, w.plan.dur) })
	}
	b, g := w.pair("remote", bare, func() measurement {
		return measure([]int{w.edge.pid(), w.consumer.pid()}, func() sample { return echoes(gc, w.plan.dur) })
	})
	r.add("remote consumer, unary calls: round trips/s (32 connections; bare: a gorilla WebSocket→gRPC proxy, a unary call per message, to the same consumer service)", b, g, 0, "")
	b2, g2 := w.pair("remote-stream", bare, func() measurement {
		return measure([]int{w.edge.pid(), w.consumerStream.pid()}, func() sample { return echoes(sc, w.plan.dur) })
	})
	r.add("remote consumer over Stream: round trips/s (32 connections; bare: the same unary proxy)", b2, g2, 0.8, "≥ 0.8 × bare proxy")
	r.Checks = append(r.Checks, check{
		Name:  fmt.Sprintf("remote consumer over Stream at saturation (32 connections, each sending as soon as answered): round trip p99 < 5 ms (p50 %.2f ms; unary %.2f / %.2f ms; bare proxy p50 / p99 %.2f / %.2f ms)", g2.P50, g.P50, g.P99, b2.P50, b2.P99),
		Value: g2.P99, Target: 5, Met: g2.P99 > 0 && g2.P99 < 5,
	})
	// Latency under load rather than at saturation: 5,000 round trips a second,
	// about a third of what either side can do, on a fixed schedule.
	const rate = 5000
	pb, pg := w.pair("remote-paced", func() measurement {
		return measure([]int{w.bareProxy.pid(), w.consumer.pid()}, func() sample { return pacedEchoes(bc, w.plan.dur, rate) })
	}, func() measurement {
		return measure([]int{w.edge.pid(), w.consumerStream.pid()}, func() sample { return pacedEchoes(sc, w.plan.dur, rate) })
	})
	r.Checks = append(r.Checks, check{
		Name:  fmt.Sprintf("remote consumer over Stream at %d round trips/s (32 connections, paced): p99 < 5 ms (p50 %.2f ms; bare proxy p50 / p99 %.2f / %.2f ms)", rate, pg.P50, pb.P50, pb.P99),
		Value: pg.P99, Target: 5, Met: pg.P99 > 0 && pg.P99 < 5,
	})
	// Opened only now: sockets left idle through the measurements above would have
	// been dropped for not answering the edge's pings.
	ic, err := openConns(n, func(i int) (string, http.Header) { return w.edgeURL(), w.cookie(i) }, nil)
	if err != nil {
		return err
	}
	defer closeAll(ic)
	in := measure(w.gatehousePIDs(), func() sample { return echoes(ic, w.plan.dur) })
	r.add("for scale: the edge's in-process echo (32 connections; baseline column: the remote consumer over Stream)", g2, in, 0, "")
	return nil
}
