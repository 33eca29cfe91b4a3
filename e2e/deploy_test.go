//go:build deploy

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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
	"google.golang.org/grpc/metadata"
)

// The deployment artifacts, proven (make test-deploy, after make images): the
// FROM-scratch images run from deploy/kubernetes/gatehouse.yaml with podman kube
// play — authsvc, two edges and NATS — and serve signed-in sockets across edges; an
// edge stopped as Kubernetes stops it closes its sockets with 1001. The HAProxy
// example passes haproxy -c. What podman cannot do is adapted, each named below.

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
	admin, api := b64(adminToken), b64(apiToken)
	secrets := filepath.Join(dir, "secrets.yaml")
	writeFile(t, secrets, fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: gatehouse-secrets}
data: {admin-token: %s, frontend-token: %s, api-token: %s}
---
apiVersion: v1
kind: Secret
metadata: {name: gatehouse-tls}
data: {ca.pem: %s}
`, admin, b64(frontToken), api, b64("unused")))
	clean := func() {
		podmanTry(conf, "secret", "rm", "gatehouse-secrets", "gatehouse-tls", "gatehouse-db")
		// podman keeps a volume made from a secret or config map, and would mount a
		// stale one next time.
		podmanTry(conf, "volume", "rm", "-f", "gatehouse-secrets", "gatehouse-tls", "nats-config")
	}
	clean()
	t.Cleanup(clean)
	podman(t, conf, "kube", "play", secrets)
	db := fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", dbAddr, dbName)
	dbJSON, _ := json.Marshal(map[string]string{"database-url": b64(db)})
	dbSecret := filepath.Join(dir, "db.json")
	writeFile(t, dbSecret, string(dbJSON))
	podman(t, conf, "secret", "create", "gatehouse-db", dbSecret)

	// The settings (played with the workloads): deploy/kubernetes/config.yaml's, but on loopback (host network,
	// no cluster DNS) and without TLS between the processes (no certificates here).
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
  EDGESVC_NATS_URL: "nats://%s"
  EDGESVC_SHUTDOWN_TIMEOUT: "5s"
---
apiVersion: v1
kind: ConfigMap
metadata: {name: nats-config}
data:
  nats.conf: |
    listen: %s
    max_payload: 2MB
`, authAddr, authAddr, natsAddr, natsAddr))

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

	// Stopped as Kubernetes stops a pod (SIGTERM, then a grace period): the edge's
	// sockets close with 1001 and /readyz says 503 meanwhile.
	go podmanTry(conf, "stop", "-t", "20", "edgesvc-pod-0-edgesvc")
	expectClose(t, ws0, 1001, "server shutting down", 10*time.Second)
	echo(t, ws1, "the other edge serves on")
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
