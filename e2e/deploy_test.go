//go:build deploy

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	edgev1 "github.com/gatehouse/gatehouse/gen/gatehouse/edge/v1"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"google.golang.org/grpc/metadata"
)

// The deployment artifacts, proven (make test-deploy, after make images): the
// FROM-scratch images run from deploy/kubernetes/gatehouse.yaml with podman kube
// play — authsvc, two edges and NATS — and serve signed-in sockets across edges; NATS
// runs as the manifests run it (TLS, only the edges' NKey, rights under the prefix):
// a NATS client without the NKey is refused, and an edge with the NKey but another
// layer key delivers nothing and counts what it rejects; an edge stopped as
// Kubernetes stops it closes its sockets with 1001. The HAProxy example passes
// haproxy -c. What podman cannot do is adapted, each named below.

// podman runs podman with this machine's container settings, and returns its output.
func podman(t *testing.T, conf string, args ...string) string {
	t.Helper()
	cmd := exec.Command("podman", args...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+conf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestDeploy(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatal("no podman: apt-get install podman runc catatonit (.ci/run does)")
	}
	dir := t.TempDir()
	// runc (crun refuses hybrid cgroups) and limits a container may have here.
	conf := filepath.Join(dir, "containers.conf")
	if err := os.WriteFile(conf, []byte("[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n[engine]\nruntime = \"runc\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, img := range []string{"authsvc", "edgesvc", "nats-server"} {
		var info []struct {
			Config struct{ User string }
			RootFS struct{ Layers []string }
		}
		if err := json.Unmarshal([]byte(podman(t, conf, "image", "inspect", "localhost/gatehouse/"+img+":latest")), &info); err != nil || len(info) != 1 {
			t.Fatalf("image %s: %v (run make images)", img, err)
		}
		if info[0].Config.User != "65534:65534" || len(info[0].RootFS.Layers) != 1 {
			t.Fatalf("image %s: user %q, %d layers; want 65534:65534 and the binary alone", img, info[0].Config.User, len(info[0].RootFS.Layers))
		}
	}
	// The manifest names NATS's official image; this offline machine runs the same
	// version built here under that name.
	podman(t, conf, "tag", "localhost/gatehouse/nats-server:latest", "docker.io/library/nats:2.15.3")

	// PostgreSQL for the containers (host network): the tests' server, over TCP.
	dbAddr, dbName := pgOverTCP(t)
	natsAddr, authAddr := freeAddr(t), freeAddr(t)

	// Secrets: tokens as volumes, the database URL as an environment variable. podman
	// 4.3 reads a volume's secret as a Secret manifest's base64 data and writes the
	// files still encoded, so each process reads a token's base64 form: that form is
	// the token here (all sides read the same files). For environment variables it
	// wants JSON of base64 values.
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	admin, api, front := b64(adminToken), b64(apiToken), b64(frontToken)
	secrets := filepath.Join(dir, "secrets.yaml")
	writeFile(t, secrets, fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: gatehouse-secrets}
data: {admin-token: %s, frontend-token: %s, api-token: %s, layer-key: %s, nats-nkey: %s}
---
apiVersion: v1
kind: Secret
metadata: {name: gatehouse-tls}
data: {ca.pem: %s, nats.pem: %s, nats-key.pem: %s}
---
apiVersion: v1
kind: Secret
metadata: {name: nats-auth}
data: {auth.conf: %s}
`, admin, front, api, b64(layerKey), b64("unused"), b64("unused"), b64("unused"), b64("unused"), b64("unused")))
	// The files that must be read as they are (certificates, the NKey seed, NATS's
	// authorization) are mounted from the host instead (podman would hand them over
	// base64-encoded): the edges' secrets folder holds the tokens in the base64 form
	// authsvc reads, the layer key, and the seed.
	ca := newCA(t, "gatehouse deploy CA")
	natsCert, natsKey := ca.issue(t, "nats", "nats")
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	pub, _ := user.PublicKey()
	host := func(name string, files map[string]string) string {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for f, data := range files {
			if err := os.WriteFile(filepath.Join(d, f), []byte(data), 0o644); err != nil { // the containers run as 65534
				t.Fatal(err)
			}
		}
		return d
	}
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) { // reachable by 65534
		_ = os.Chmod(d, 0o755)
	}
	edgeSecrets := host("edge-secrets", map[string]string{"frontend-token": front, "api-token": api, "layer-key": layerKey, "nats-nkey": string(seed)})
	edgeTLS := host("edge-tls", map[string]string{"ca.pem": string(ca.pem)})
	natsTLS := host("nats-tls", map[string]string{"nats.pem": string(natsCert), "nats-key.pem": string(natsKey)})
	natsAuth := host("nats-auth", map[string]string{"auth.conf": natsAuthConf(t, pub)})
	clean := func() {
		podmanTry(conf, "secret", "rm", "gatehouse-secrets", "gatehouse-tls", "gatehouse-db", "nats-auth")
		// podman keeps a volume made from a secret or config map, and would mount a
		// stale one next time.
		podmanTry(conf, "volume", "rm", "-f", "gatehouse-secrets", "gatehouse-tls", "nats-config", "nats-auth")
	}
	clean()
	t.Cleanup(clean)
	podman(t, conf, "kube", "play", secrets)
	db := fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", dbAddr, dbName)
	dbJSON, _ := json.Marshal(map[string]string{"database-url": b64(db)})
	dbSecret := filepath.Join(dir, "db.json")
	writeFile(t, dbSecret, string(dbJSON))
	podman(t, conf, "secret", "create", "gatehouse-db", dbSecret)

	// The settings (played with the workloads): deploy/kubernetes/config.yaml's, but on
	// loopback (host network, no cluster DNS) and without TLS to authsvc; NATS as the
	// manifests say, on its own port (its nats.conf from config.yaml).
	natsConf := manifestNATSConf(t, natsAddr)
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata: {name: gatehouse-config}
data:
  AUTHSVC_LISTEN: "%s"
  AUTHSVC_ADMIN_TOKEN_FILE: /secrets/admin-token
  AUTHSVC_FRONTEND_TOKEN_FILE: /secrets/frontend-token
  AUTHSVC_ARGON2_MEMORY_KIB: "1024"
  EDGESVC_LISTEN: "127.0.0.1:0"
  EDGESVC_API_LISTEN: "127.0.0.1:0"
  EDGESVC_API_TOKEN_FILE: /secrets/api-token
  EDGESVC_AUTH_ADDR: "%s"
  EDGESVC_AUTH_TOKEN_FILE: /secrets/frontend-token
  EDGESVC_NATS_URL: "tls://%s"
  EDGESVC_NATS_CA: /tls/ca.pem
  EDGESVC_NATS_NKEY_FILE: /secrets/nats-nkey
  EDGESVC_LAYER_KEY_FILE: /secrets/layer-key
  EDGESVC_METRICS_LISTEN: "127.0.0.1:0"
  EDGESVC_SHUTDOWN_TIMEOUT: "5s"
---
apiVersion: v1
kind: ConfigMap
metadata: {name: nats-config}
data:
  nats.conf: |
%s`, authAddr, authAddr, natsAddr, natsConf))

	// The workloads as they are, but for what podman 4.3 cannot do on the host's
	// network: declare container ports, or run two authsvc on one fixed port.
	manifest, err := os.ReadFile("../deploy/kubernetes/gatehouse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(manifest), "\n---\n")
	for i, d := range docs {
		d = regexp.MustCompile(`\n {10}ports:\n( {12}- .*\n)+`).ReplaceAllString(d, "\n")
		if strings.Contains(d, "kind: Deployment") && strings.Contains(d, "name: authsvc\n") {
			d = strings.Replace(d, "replicas: 2", "replicas: 1", 1)
		}
		if strings.Contains(d, "kind: Deployment") && strings.Contains(d, "name: edgesvc\n") {
			d = replaceVolume(t, d, "secrets", edgeSecrets)
			d = replaceVolume(t, d, "tls", edgeTLS)
		}
		if strings.Contains(d, "kind: Deployment") && strings.Contains(d, "name: nats\n") {
			d = replaceVolume(t, d, "auth", natsAuth)
			d = replaceVolume(t, d, "tls", natsTLS)
		}
		docs[i] = d
	}
	cfgData, _ := os.ReadFile(cfg)
	play := filepath.Join(dir, "gatehouse.yaml")
	writeFile(t, play, string(cfgData)+"---\n"+strings.Join(docs, "\n---\n"))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- podman ps -a ---\n%s", podmanTry(conf, "ps", "-a"))
			for _, c := range []string{"authsvc-pod-0-authsvc", "edgesvc-pod-0-edgesvc", "edgesvc-pod-1-edgesvc", "nats-pod-0-nats"} {
				t.Logf("--- %s ---\n%s", c, podmanTry(conf, "logs", c))
			}
		}
		podmanTry(conf, "kube", "play", "--down", play)
	})
	podman(t, conf, "kube", "play", "--network", "host", play)

	// Both edges up (each logs where it listens), ready, and on NATS.
	var edges, apis []string
	re := regexp.MustCompile(`edgesvc listening" addr=(\S+) .*api=(\S+)`)
	for _, c := range []string{"edgesvc-pod-0-edgesvc", "edgesvc-pod-1-edgesvc"} {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			out := podmanTry(conf, "logs", c)
			if m := re.FindStringSubmatch(out); m != nil {
				edges, apis = append(edges, m[1]), append(apis, m[2])
				if mm := metricsRE.FindStringSubmatch(out); mm != nil {
					metricsAt.Store(mm[1], mm[2])
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not start:\n%s", c, out)
			}
		}
	}
	for _, e := range edges {
		waitReady(t, e)
		for deadline := time.Now().Add(15 * time.Second); metric(t, e, "gatehouse_edge_nats_edges") != 2; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("edge %s does not see the other over NATS", e)
			}
		}
	}

	// A user signed in on both edges; a send through one edge's API reaches both.
	cc := dial(t, authAddr)
	name := fmt.Sprint("deploy", time.Now().UnixNano())
	adminCtx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+admin)
	created, err := authv1.NewAdminServiceClient(cc).CreateUser(adminCtx, &authv1.CreateUserRequest{Username: name, Password: testPassword})
	if err != nil {
		t.Fatal(err)
	}
	u := created.GetUser()
	l, err := authv1.NewAuthServiceClient(cc).Login(t.Context(), &authv1.LoginRequest{Username: name, Password: testPassword})
	if err != nil {
		t.Fatal(err)
	}
	ws0, ws1 := mustOpen(t, edges[0], l), mustOpen(t, edges[1], l)
	edgeAPI := edgev1.NewEdgeServiceClient(dial(t, apis[1]))
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+api)
	if _, err := edgeAPI.Send(ctx, &edgev1.SendRequest{Target: userTarget(u.GetId()), Payload: &edgev1.SendRequest_Text{Text: "from the manifests"}}); err != nil {
		t.Fatal(err)
	}
	readText(t, ws0, "from the manifests")
	readText(t, ws1, "from the manifests")

	// NATS refuses a client without the edges' NKey, over TLS or not.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.pem)
	if nc, err := nats.Connect("tls://"+natsAddr, nats.Secure(&tls.Config{RootCAs: pool}), nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Fatal("NATS took a client without credentials")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("a NATS client without credentials: %v, want an authorization violation", err)
	}
	if nc, err := nats.Connect("nats://"+natsAddr, nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Fatal("NATS took a client without TLS")
	}
	// An edge with the NKey but another layer key: it hears the others and they it,
	// but nothing opens. It counts what it rejects and delivers nothing; neither side
	// counts the other as an edge.
	wrong := startEdge(t, authAddr, "EDGESVC_AUTH_TOKEN="+front, "EDGESVC_NATS_URL=tls://"+natsAddr, "EDGESVC_NATS_CA="+filepath.Join(edgeTLS, "ca.pem"),
		"EDGESVC_NATS_NKEY_FILE="+filepath.Join(edgeSecrets, "nats-nkey"), "EDGESVC_LAYER_KEY=another-layer-key-0123456789abcdef0123456789", "EDGESVC_NODE_ID=wrong-key")
	waitReady(t, wrong.addr)
	wsWrong := mustOpen(t, wrong.addr, l)
	rejectedOpen := func() float64 { return metric(t, wrong.addr, `gatehouse_edge_nats_rejected_total{reason="open"}`) }
	before := rejectedOpen()
	if _, err := edgeAPI.Send(ctx, &edgev1.SendRequest{Target: userTarget(u.GetId()), Payload: &edgev1.SendRequest_Text{Text: "sealed"}}); err != nil {
		t.Fatal(err)
	}
	readText(t, ws0, "sealed")
	readText(t, ws1, "sealed")
	for deadline := time.Now().Add(10 * time.Second); rejectedOpen() <= before; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the edge with another layer key counted no rejection")
		}
	}
	_ = wsWrong.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, b, err := wsWrong.ReadMessage(); err == nil {
		t.Fatalf("the edge with another layer key delivered %q", b)
	}
	for _, e := range append(edges, wrong.addr) {
		want := 2.0
		if e == wrong.addr {
			want = 1
		}
		if n := metric(t, e, "gatehouse_edge_nats_edges"); n != want {
			t.Fatalf("edge %s counts %v edges, want %v", e, n, want)
		}
	}
	if metric(t, edges[0], `gatehouse_edge_nats_rejected_total{reason="open"}`) == 0 {
		t.Fatal("the manifests' edges counted none of the other key's messages")
	}

	// Stopped as Kubernetes stops a pod (SIGTERM, then a grace period): the edge's
	// sockets close with 1001 and /readyz says 503 meanwhile.
	go podmanTry(conf, "stop", "-t", "20", "edgesvc-pod-0-edgesvc")
	expectClose(t, ws0, 1001, "server shutting down", 10*time.Second)
	echo(t, ws1, "the other edge serves on")
}

// replaceVolume makes the volume name in a Deployment d a host folder.
func replaceVolume(t *testing.T, d, name, folder string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^        - name: ` + name + `\n          secret:.*\n(?:            .*\n)*`)
	d += "\n" // the last line of a document, too
	if len(re.FindAllString(d, -1)) != 1 {
		t.Fatalf("the manifest has no one secret volume %q to mount from the host", name)
	}
	return strings.TrimSuffix(re.ReplaceAllString(d, "        - name: "+name+"\n          hostPath: {path: "+folder+", type: Directory}\n"), "\n")
}

// manifestNATSConf returns deploy/kubernetes/config.yaml's nats.conf, indented for a
// ConfigMap, listening on addr only (host network: no monitoring port).
func manifestNATSConf(t *testing.T, addr string) string {
	t.Helper()
	b, err := os.ReadFile("../deploy/kubernetes/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, conf, ok := strings.Cut(string(b), "  nats.conf: |\n")
	if !ok || !strings.Contains(conf, "    port: 4222\n") || !strings.Contains(conf, "    http_port: 8222\n") {
		t.Fatal("deploy/kubernetes/config.yaml: no nats.conf with port 4222 and http_port 8222")
	}
	conf = strings.Replace(conf, "    port: 4222\n", "    listen: "+addr+"\n", 1)
	return strings.Replace(conf, "    http_port: 8222\n", "", 1)
}

// natsAuthConf is secrets.example.yaml's auth.conf for the edges' NKey pub.
func natsAuthConf(t *testing.T, pub string) string {
	t.Helper()
	b, err := os.ReadFile("../deploy/kubernetes/secrets.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, conf, ok := strings.Cut(string(b), "  auth.conf: |\n")
	conf, _, _ = strings.Cut(conf, "---")
	if !ok || !strings.Contains(conf, "REPLACE-with-the-public-key-U...") {
		t.Fatal("deploy/kubernetes/secrets.example.yaml: no auth.conf naming the edges' public key")
	}
	return strings.Replace(conf, "REPLACE-with-the-public-key-U...", pub, 1)
}

// podmanTry is podman for what may fail: its output, errors included.
func podmanTry(conf string, args ...string) string {
	cmd := exec.Command("podman", args...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+conf)
	out, _ := cmd.CombinedOutput()
	return string(out)
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// pgOverTCP returns a loopback TCP address reaching the tests' PostgreSQL and the
// package's database name: the server itself when it listens on TCP, else a
// forwarder to its Unix socket (containers cannot enter its private directory).
func pgOverTCP(t *testing.T) (addr, db string) {
	t.Helper()
	pc, err := pgx.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pc.Host, "/") {
		return net.JoinHostPort(pc.Host, fmt.Sprint(pc.Port)), pc.Database
	}
	sock := filepath.Join(pc.Host, fmt.Sprintf(".s.PGSQL.%d", pc.Port))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("unix", sock)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c) }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
	return lis.Addr().String(), pc.Database
}

// TestDeployHAProxyExample: deploy/haproxy.cfg is a valid HAProxy configuration
// (with a throwaway certificate where it names the site's).
func TestDeployHAProxyExample(t *testing.T) {
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Fatal("no haproxy: apt-get install haproxy")
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "chat.example.com"},
		DNSNames: []string{"chat.example.com"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	kder, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	pemFile := filepath.Join(dir, "site.pem")
	writeFile(t, pemFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))+string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
	cfg, err := os.ReadFile("../deploy/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	test := filepath.Join(dir, "haproxy.cfg")
	writeFile(t, test, strings.ReplaceAll(string(cfg), "/etc/haproxy/chat.example.com.pem", pemFile))
	if out, err := exec.Command("haproxy", "-c", "-f", test).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
}
