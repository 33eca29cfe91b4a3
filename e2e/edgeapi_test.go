package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	edgev1 "github.com/gatehouse/gatehouse/gen/gatehouse/edge/v1"
	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The edge API (gatehouse.edge.v1.EdgeService) against the built binaries: pushes
// reach real WebSocket clients of real sessions, and every refusal has its reason.

func apiCtx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+apiToken)
}

func edgeAPI(t *testing.T, s *system) edgev1.EdgeServiceClient {
	return edgev1.NewEdgeServiceClient(dial(t, s.edge.apiAddr(t)))
}

func userTarget(id int64) *edgev1.Target {
	return &edgev1.Target{Target: &edgev1.Target_UserId{UserId: id}}
}

func groupTarget(g string) *edgev1.Target {
	return &edgev1.Target{Target: &edgev1.Target_Group{Group: g}}
}

func connTarget(id string) *edgev1.Target {
	return &edgev1.Target{Target: &edgev1.Target_ConnectionId{ConnectionId: id}}
}

func wantReason(t *testing.T, what string, err error, code codes.Code, reason string) {
	t.Helper()
	info := errorInfo(err)
	if status.Code(err) != code || info.GetReason() != reason || info.GetDomain() != "edge.gatehouse.dev" {
		t.Errorf("%s: %v (%v); want %s %s in edge.gatehouse.dev", what, err, info, code, reason)
	}
}

func readText(t *testing.T, ws *websocket.Conn, want string) {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	mt, got, err := ws.ReadMessage()
	if err != nil || string(got) != want || mt != websocket.TextMessage {
		t.Fatalf("read %d %q, %v; want text %q", mt, got, err, want)
	}
}

// TestEdgeAPIPushes: Send to a user reaches every tab of theirs (and a parked one),
// GroupAdd then Send to the group reaches the new members, presence counts them,
// ListConnections pages through them, Disconnect closes with the operator's code.
func TestEdgeAPIPushes(t *testing.T) {
	s := newSystem(t, nil, nil)
	api := edgeAPI(t, s)
	ctx := apiCtx(t.Context())
	alice, pw := s.newUser(t)
	bob, bpw := s.newUser(t)
	la := s.login(t, alice, pw)
	tabs := []*websocket.Conn{mustOpen(t, s.edge.addr, la), mustOpen(t, s.edge.addr, la), mustOpen(t, s.edge.addr, s.login(t, alice, pw))}
	b := mustOpen(t, s.edge.addr, s.login(t, bob, bpw))
	time.Sleep(300 * time.Millisecond) // quiet: the sockets park

	if _, err := api.Send(ctx, &edgev1.SendRequest{Target: userTarget(alice.GetId()), Payload: &edgev1.SendRequest_Text{Text: "hello alice"}}); err != nil {
		t.Fatal(err)
	}
	for _, ws := range tabs {
		readText(t, ws, "hello alice")
	}
	if _, err := api.Send(ctx, &edgev1.SendRequest{Target: userTarget(bob.GetId()), Payload: &edgev1.SendRequest_Binary{Binary: []byte{0, 1, 2}}}); err != nil {
		t.Fatal(err)
	}
	_ = b.SetReadDeadline(time.Now().Add(10 * time.Second))
	if mt, got, err := b.ReadMessage(); err != nil || mt != websocket.BinaryMessage || string(got) != "\x00\x01\x02" {
		t.Fatalf("binary push: %d %q %v", mt, got, err)
	}

	// Groups: alice's and bob's connections join; a send to the group reaches all but
	// the excluded one.
	for _, u := range []int64{alice.GetId(), bob.GetId()} {
		if _, err := api.GroupAdd(ctx, &edgev1.GroupAddRequest{Group: "news", Target: userTarget(u)}); err != nil {
			t.Fatal(err)
		}
	}
	pres, err := api.GroupPresence(ctx, &edgev1.GroupPresenceRequest{Group: "news"})
	if err != nil {
		t.Fatal(err)
	}
	if pres.GetConnectionCount() != 4 || len(pres.GetUsers()) != 2 || pres.GetUsers()[0].GetConnectionCount() != 3 ||
		pres.GetUsers()[0].GetUsername() != alice.GetUsername() || pres.GetUsers()[1].GetConnectionCount() != 1 || pres.GetPartial() {
		t.Fatalf("presence = %v", pres)
	}

	// ListConnections, two a page, in connected_at order.
	var all []*edgev1.Connection
	token := ""
	for page := 0; ; page++ {
		resp, err := api.ListConnections(ctx, &edgev1.ListConnectionsRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, resp.GetConnections()...)
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
		if page > 3 {
			t.Fatal("paging does not end")
		}
	}
	if len(all) != 4 {
		t.Fatalf("listed %d connections, want 4", len(all))
	}
	for i, c := range all {
		if i > 0 && c.GetConnectedAt().AsTime().Before(all[i-1].GetConnectedAt().AsTime()) {
			t.Fatal("connections out of order")
		}
		if c.GetPath() != fmt.Sprintf("/ws/myapp/%d/", c.GetUser().GetId()) || !slices.Equal(c.GetGroups(), []string{"news"}) || c.GetEdge() == "" ||
			!strings.HasPrefix(c.GetId(), c.GetEdge()+".") || c.GetSessionId() == "" {
			t.Fatalf("connection %v", c)
		}
	}
	bobs, err := api.ListConnections(ctx, &edgev1.ListConnectionsRequest{Target: userTarget(bob.GetId())})
	if err != nil || len(bobs.GetConnections()) != 1 {
		t.Fatalf("bob's connections: %v, %v", bobs, err)
	}
	bobID := bobs.GetConnections()[0].GetId()
	if _, err := api.Send(ctx, &edgev1.SendRequest{Target: groupTarget("news"), Payload: &edgev1.SendRequest_Text{Text: "headline"}, ExcludeConnectionIds: []string{bobID}}); err != nil {
		t.Fatal(err)
	}
	for _, ws := range tabs {
		readText(t, ws, "headline")
	}
	if _, err := api.Send(ctx, &edgev1.SendRequest{Target: connTarget(bobID), Payload: &edgev1.SendRequest_Text{Text: "just you"}}); err != nil {
		t.Fatal(err)
	}
	readText(t, b, "just you") // and not the headline before it

	// Disconnect: an operator's code and reason; gone from the group at once.
	if _, err := api.Disconnect(ctx, &edgev1.DisconnectRequest{Target: userTarget(bob.GetId()), Code: 4003, Reason: "banned"}); err != nil {
		t.Fatal(err)
	}
	expectClose(t, b, 4003, "banned", 5*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		pres, err := api.GroupPresence(ctx, &edgev1.GroupPresenceRequest{Group: "news"})
		if err != nil {
			t.Fatal(err)
		}
		if pres.GetConnectionCount() == 3 && len(pres.GetUsers()) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("presence after bob's kick: %v", pres)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A logout ends alice's session: its sockets leave every group and listing.
	if _, err := s.authC.Logout(t.Context(), &authv1.LogoutRequest{Token: la.GetToken()}); err != nil {
		t.Fatal(err)
	}
	expectClose(t, tabs[0], 4401, "logout", 5*time.Second)
	expectClose(t, tabs[1], 4401, "logout", 5*time.Second)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		left, err := api.ListConnections(ctx, &edgev1.ListConnectionsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(left.GetConnections()) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the logout: %d connections listed, want alice's other session's one", len(left.GetConnections()))
		}
	}
}

// TestEdgeAPIRefusals: every EdgeService error reason a caller can meet.
func TestEdgeAPIRefusals(t *testing.T) {
	s := newSystem(t, nil, []string{"EDGESVC_READ_LIMIT=1024"})
	api := edgeAPI(t, s)
	ctx := apiCtx(t.Context())
	u, pw := s.newUser(t)
	ws := mustOpen(t, s.edge.addr, s.login(t, u, pw))
	_ = ws

	text := &edgev1.SendRequest_Text{Text: "x"}
	_, err := api.Send(t.Context(), &edgev1.SendRequest{Target: userTarget(1), Payload: text})
	wantReason(t, "no token", err, codes.Unauthenticated, "API_TOKEN_REQUIRED")
	_, err = api.Send(metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer nope"), &edgev1.SendRequest{Target: userTarget(1), Payload: text})
	wantReason(t, "wrong token", err, codes.Unauthenticated, "API_TOKEN_INVALID")
	_, err = api.Send(metadata.AppendToOutgoingContext(t.Context(), "authorization", "Basic "+apiToken), &edgev1.SendRequest{Target: userTarget(1), Payload: text})
	wantReason(t, "not bearer", err, codes.Unauthenticated, "API_TOKEN_REQUIRED")

	for name, call := range map[string]func() error{
		"INVALID_TARGET no target": func() error { _, err := api.Send(ctx, &edgev1.SendRequest{Payload: text}); return err },
		"INVALID_TARGET user 0": func() error {
			_, err := api.Send(ctx, &edgev1.SendRequest{Target: userTarget(0), Payload: text})
			return err
		},
		"INVALID_TARGET empty connection": func() error {
			_, err := api.Send(ctx, &edgev1.SendRequest{Target: connTarget(""), Payload: text})
			return err
		},
		"INVALID_TARGET group add a group": func() error {
			_, err := api.GroupAdd(ctx, &edgev1.GroupAddRequest{Group: "a", Target: groupTarget("b")})
			return err
		},
		"INVALID_GROUP send": func() error {
			_, err := api.Send(ctx, &edgev1.SendRequest{Target: groupTarget("no spaces"), Payload: text})
			return err
		},
		"INVALID_GROUP add": func() error {
			_, err := api.GroupAdd(ctx, &edgev1.GroupAddRequest{Group: strings.Repeat("x", 101), Target: userTarget(1)})
			return err
		},
		"INVALID_GROUP discard": func() error {
			_, err := api.GroupDiscard(ctx, &edgev1.GroupDiscardRequest{Group: "", Target: userTarget(1)})
			return err
		},
		"INVALID_GROUP presence": func() error {
			_, err := api.GroupPresence(ctx, &edgev1.GroupPresenceRequest{Group: "a/b"})
			return err
		},
		"INVALID_CLOSE_CODE 4401": func() error {
			_, err := api.Disconnect(ctx, &edgev1.DisconnectRequest{Target: userTarget(1), Code: 4401})
			return err
		},
		"INVALID_CLOSE_CODE 1000": func() error {
			_, err := api.Disconnect(ctx, &edgev1.DisconnectRequest{Target: userTarget(1), Code: 1000})
			return err
		},
		"INVALID_CLOSE_REASON": func() error {
			_, err := api.Disconnect(ctx, &edgev1.DisconnectRequest{Target: userTarget(1), Code: 4000, Reason: strings.Repeat("x", 121)})
			return err
		},
		"PAYLOAD_TOO_LARGE": func() error {
			_, err := api.Send(ctx, &edgev1.SendRequest{Target: userTarget(1), Payload: &edgev1.SendRequest_Text{Text: strings.Repeat("x", 1025)}})
			return err
		},
		"INVALID_PAGE_SIZE": func() error {
			_, err := api.ListConnections(ctx, &edgev1.ListConnectionsRequest{PageSize: -1})
			return err
		},
		"INVALID_PAGE_TOKEN garbage": func() error {
			_, err := api.ListConnections(ctx, &edgev1.ListConnectionsRequest{PageToken: "not a token"})
			return err
		},
	} {
		reason, _, _ := strings.Cut(name, " ")
		code := codes.InvalidArgument
		wantReason(t, name, call(), code, reason)
	}

	// A page token is for the request it came from.
	for range 3 {
		mustOpen(t, s.edge.addr, s.login(t, u, pw))
	}
	first, err := api.ListConnections(ctx, &edgev1.ListConnectionsRequest{PageSize: 1})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("first page: %v, %v", first, err)
	}
	_, err = api.ListConnections(ctx, &edgev1.ListConnectionsRequest{PageSize: 1, PageToken: first.GetNextPageToken(), Target: userTarget(u.GetId())})
	wantReason(t, "a token for another target", err, codes.InvalidArgument, "INVALID_PAGE_TOKEN")

	// TOO_MANY_GROUPS: the 101st group of a connection.
	for i := range 100 {
		if _, err := api.GroupAdd(ctx, &edgev1.GroupAddRequest{Group: fmt.Sprint("g", i), Target: userTarget(u.GetId())}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = api.GroupAdd(ctx, &edgev1.GroupAddRequest{Group: "g100", Target: userTarget(u.GetId())})
	wantReason(t, "the 101st group", err, codes.ResourceExhausted, "TOO_MANY_GROUPS")

	// Health needs no credential; the API is not served on the public HTTP port.
	hc := healthpb.NewHealthClient(dial(t, s.edge.apiAddr(t)))
	if h, err := hc.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "gatehouse.edge.v1.EdgeService"}); err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v, %v", h, err)
	}
	public := edgev1.NewEdgeServiceClient(dial(t, s.edge.addr))
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := public.Send(cctx, &edgev1.SendRequest{Target: userTarget(u.GetId()), Payload: text}, grpc.WaitForReady(false)); status.Code(err) == codes.OK {
		t.Fatal("EdgeService answered on the public HTTP port")
	}
	if resp, err := http.Get("http://" + s.edge.addr + "/gatehouse.edge.v1.EdgeService/Send"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("the public port serves the API path")
		}
	}
}

// TestEdgeAPIDisabled: an edge with no API token refuses every EdgeService call,
// saying how to turn the API on.
func TestEdgeAPIDisabled(t *testing.T) {
	s := newSystem(t, nil, []string{"EDGESVC_API_TOKEN="})
	_, err := edgeAPI(t, s).Send(apiCtx(t.Context()), &edgev1.SendRequest{Target: userTarget(1), Payload: &edgev1.SendRequest_Text{Text: "x"}})
	wantReason(t, "no token configured", err, codes.Unauthenticated, "API_DISABLED")
	if !strings.Contains(status.Convert(err).Message(), "EDGESVC_API_TOKEN") {
		t.Fatalf("the refusal does not say how to enable the API: %v", err)
	}
}

// TestEdgeAPITLS: served with TLS and a client CA, the edge API admits a caller with a
// client certificate from that CA and no token; one without a certificate needs the
// token; a certificate from another CA is refused (the client does not even offer it:
// the server names the CAs it accepts).
func TestEdgeAPITLS(t *testing.T) {
	f := tlsFiles(t, t.TempDir())
	tlsEnv := []string{"EDGESVC_API_TLS_CERT=" + f["server.pem"], "EDGESVC_API_TLS_KEY=" + f["server-key.pem"], "EDGESVC_API_TLS_CLIENT_CA=" + f["ca.pem"]}
	send := func(cc *grpc.ClientConn, ctx context.Context) error {
		_, err := edgev1.NewEdgeServiceClient(cc).Send(ctx, &edgev1.SendRequest{Target: userTarget(1), Payload: &edgev1.SendRequest_Text{Text: "x"}})
		return err
	}
	tlsOnly := func(t *testing.T, addr string) *grpc.ClientConn {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(mustRead(t, f["ca.pem"]))
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}

	t.Run("certificate instead of a token", func(t *testing.T) {
		s := newSystem(t, nil, append([]string{"EDGESVC_API_TOKEN="}, tlsEnv...))
		addr := s.edge.apiAddr(t)
		if err := send(mtlsConn(t, addr, f), t.Context()); err != nil {
			t.Fatalf("a client certificate from the CA: %v", err)
		}
		err := send(tlsOnly(t, addr), t.Context())
		wantReason(t, "no certificate, no token configured", err, codes.Unauthenticated, "API_TOKEN_REQUIRED")
		rogue := map[string]string{"ca.pem": f["ca.pem"], "client.pem": f["rogue.pem"], "client-key.pem": f["rogue-key.pem"]}
		if err := send(mtlsConn(t, addr, rogue), t.Context()); status.Code(err) != codes.Unavailable {
			wantReason(t, "a certificate from another CA", err, codes.Unauthenticated, "API_TOKEN_REQUIRED")
		}
	})
	t.Run("token without a certificate", func(t *testing.T) {
		s := newSystem(t, nil, tlsEnv)
		if err := send(tlsOnly(t, s.edge.apiAddr(t)), apiCtx(t.Context())); err != nil {
			t.Fatalf("TLS with the token: %v", err)
		}
	})
}

// TestEdgeAPIConfigRefused: the edge refuses to start with an API or layer
// configuration that cannot work or is open to the network, saying what is wrong.
func TestEdgeAPIConfigRefused(t *testing.T) {
	f := tlsFiles(t, t.TempDir())
	empty := filepath.Join(t.TempDir(), "empty-token")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  []string
		says string
	}{
		{[]string{"EDGESVC_API_TLS_CLIENT_CA=" + f["ca.pem"]}, "EDGESVC_API_TLS_CLIENT_CA needs EDGESVC_API_TLS_CERT"},
		{[]string{"EDGESVC_API_TLS_CERT=" + f["server.pem"]}, "EDGESVC_API_TLS_CERT and EDGESVC_API_TLS_KEY go together"},
		{[]string{"EDGESVC_API_TOKEN=", "EDGESVC_API_TOKEN_FILE=" + empty}, "is empty"},
		{[]string{"EDGESVC_API_TOKEN=", "EDGESVC_API_TOKEN_FILE=" + empty + "-missing"}, "EDGESVC_API_TOKEN_FILE"},
		{[]string{"EDGESVC_API_TOKEN=short-token"}, "at least 32 bytes"},
		{[]string{"EDGESVC_AUTH_TOKEN=", "EDGESVC_AUTH_TOKEN_FILE=" + empty}, "is empty"},
		{[]string{"EDGESVC_AUTH_TOKEN_FILE=" + empty}, "not both"},      // EDGESVC_AUTH_TOKEN is set too
		{[]string{"EDGESVC_API_TOKEN_FILE=" + f["ca.pem"]}, "not both"}, // EDGESVC_API_TOKEN is set too
		{[]string{"EDGESVC_SEND_BUFFER=1000"}, "at least twice EDGESVC_READ_LIMIT"},
		{[]string{"EDGESVC_NODE_ID=no.dots"}, "EDGESVC_NODE_ID"},
		{[]string{"EDGESVC_NATS_URL=http://127.0.0.1:4222"}, `scheme "http"`},
		{[]string{"EDGESVC_NATS_URL=nats://127.0.0.1:1", "EDGESVC_NATS_PREFIX=gatehouse.*"}, "subject prefix"},
		{[]string{"EDGESVC_NATS_CA=" + f["ca.pem"]}, "need EDGESVC_NATS_URL"},
		{[]string{"EDGESVC_NATS_URL=nats://127.0.0.1:1", "EDGESVC_NATS_CERT=" + f["server.pem"]}, "need EDGESVC_NATS_CA"},
		{[]string{"EDGESVC_NATS_URL=nats://127.0.0.1:1", "EDGESVC_NATS_CREDS=" + empty + "-missing"}, "EDGESVC_NATS_CREDS"},
		// The layer key: required with NATS, never short, from one place.
		{[]string{"EDGESVC_NATS_URL=nats://127.0.0.1:1"}, "no layer key is"},
		{[]string{"EDGESVC_NATS_URL=nats://127.0.0.1:1"}, "openssl rand -base64 48"},
		{[]string{"EDGESVC_NATS_URL=nats://127.0.0.1:1", "EDGESVC_LAYER_KEY=too-short-a-key"}, "at least 32 are needed"},
		{[]string{"EDGESVC_NATS_URL=nats://127.0.0.1:1", "EDGESVC_LAYER_KEY=" + layerKey, "EDGESVC_LAYER_KEY_FILE=" + f["ca.pem"]}, "not both"},
		{[]string{"EDGESVC_NATS_URL=nats://127.0.0.1:1", "EDGESVC_LAYER_KEY_FILE=" + empty}, "is empty"},
		{[]string{"EDGESVC_NATS_URL=nats://127.0.0.1:1", "EDGESVC_LAYER_KEY=" + layerKey, "EDGESVC_LAYER_KEY_FALLBACKS_FILE=" + f["ca.pem"]}, "line 1 is"},
		{[]string{"EDGESVC_NATS_URL=nats://127.0.0.1:1", "EDGESVC_LAYER_KEY=" + layerKey, "EDGESVC_LAYER_KEY_FALLBACKS_FILE=" + empty + "-missing"}, "EDGESVC_LAYER_KEY_FALLBACKS_FILE"},
		{[]string{"EDGESVC_LAYER_KEY=" + layerKey}, "need EDGESVC_NATS_URL"},
		// Off loopback: TLS and credentials, or EDGESVC_NATS_INSECURE=1.
		{[]string{"EDGESVC_NATS_URL=nats://10.1.2.3:4222", "EDGESVC_LAYER_KEY=" + layerKey}, "off loopback without TLS (EDGESVC_NATS_CA, or a tls:// URL) or credentials"},
		{[]string{"EDGESVC_NATS_URL=tls://nats.example:4222", "EDGESVC_LAYER_KEY=" + layerKey}, "off loopback without credentials"},
		{[]string{"EDGESVC_NATS_URL=nats://u:p@127.0.0.1:1,nats://10.1.2.3:4222", "EDGESVC_LAYER_KEY=" + layerKey}, "10.1.2.3:4222 is off loopback without TLS"},
		{[]string{"EDGESVC_NATS_URL=nats://10.1.2.3:4222", "EDGESVC_NATS_TOKEN_FILE=" + empty}, "is empty"},
		{[]string{"EDGESVC_NATS_URL=nats://10.1.2.3:4222", "EDGESVC_NATS_NKEY_FILE=" + f["ca.pem"]}, "EDGESVC_NATS_NKEY_FILE"},
		{[]string{"EDGESVC_NATS_URL=nats://10.1.2.3:4222", "EDGESVC_NATS_TOKEN_FILE=" + f["ca.pem"], "EDGESVC_NATS_CREDS=" + f["ca.pem"]}, "set one"},
		{[]string{"EDGESVC_NATS_TOKEN_FILE=" + f["ca.pem"]}, "need EDGESVC_NATS_URL"},
	} {
		cmd := exec.CommandContext(t.Context(), filepath.Join(binDir, "edgesvc"))
		cmd.Env = append(os.Environ(), edgeEnv("127.0.0.1:1", tc.env...)...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.says) {
			t.Errorf("edgesvc with %v: %v\n%s\nwant a refusal saying %q", tc.env, err, out, tc.says)
		}
	}
}

// TestNATSInsecureOffLoopback: EDGESVC_NATS_INSECURE=1 lets an edge use a NATS off
// loopback without TLS or credentials, warning that it does.
func TestNATSInsecureOffLoopback(t *testing.T) {
	a := startAuth(t)
	e := startEdge(t, a.addr, "EDGESVC_NATS_URL=nats://192.0.2.1:4222", "EDGESVC_NATS_INSECURE=1", "EDGESVC_LAYER_KEY="+layerKey)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(e.logs(), "EDGESVC_NATS_INSECURE=1"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no warning of an insecure NATS:\n%s", e.logs())
		}
	}
	if !strings.Contains(e.logs(), "192.0.2.1:4222 is off loopback without TLS") {
		t.Fatalf("the warning does not say what is missing:\n%s", e.logs())
	}
}
