// Package kubetest starts a real Kubernetes control plane for tests: etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler, built from the Go module proxy by tools/kube/build.sh
// and cached in the repository's ignored .cache/kube/<version>/ folder,
// serving on 127.0.0.1 ports picked free, with their data, certificates and
// logs in the test's temporary folder. Only tests import it.
//
// The first Start on a machine builds the binaries, which takes minutes on
// 2 cores (CI builds them in .ci/run before the tests); later ones reuse them.
// A binary that cannot be built fails the test with the build's output: the
// tests never skip for want of a control plane.
package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const (
	// etcdTimeout and apiserverTimeout bound the wait for each server to
	// become ready. On an idle machine etcd takes ~1 s and kube-apiserver
	// 2–3 s; the margin is for a loaded CI machine.
	etcdTimeout      = 30 * time.Second
	apiserverTimeout = 2 * time.Minute
	// controllersTimeout bounds the wait for kube-controller-manager's
	// first work; it takes 1–2 s on an idle machine.
	controllersTimeout = time.Minute

	// startAttempts is how often a server is started on fresh ports when it
	// exits before becoming ready, as when another process took a port
	// between its pick and the server's bind.
	startAttempts = 3

	// logTailBytes is how much of each server's output a failed test shows.
	logTailBytes = 32 << 10

	// ServiceClusterIPRange is the range Services' cluster IPs come from.
	ServiceClusterIPRange = "10.0.0.0/24"
)

// Cluster is a running control plane. Start stops it when the test ends:
// the controllers and the scheduler, then kube-apiserver, then etcd.
type Cluster struct {
	// Kubeconfig is a kubeconfig file for the admin user, for programs that
	// take one (paddock --kubeconfig, kube-controller-manager).
	Kubeconfig string
	// Host is the API server's URL, https://127.0.0.1:<port>.
	Host string
	// Token is the admin's bearer token, random for each cluster. The admin
	// is in system:masters.
	Token string
	// CAFile is the PEM file of the CA that signed the API server's serving
	// certificate (also the cluster's root CA for kube-controller-manager).
	CAFile string
	// ServiceAccountKeyFile is the PEM private key that signs service
	// account tokens (kube-controller-manager's
	// --service-account-private-key-file).
	ServiceAccountKeyFile string
	// EtcdURL is etcd's client URL.
	EtcdURL string
	// BinDir is the folder of the built binaries.
	BinDir string
	// Dir is the cluster's temporary folder: data, certificates, logs.
	Dir string

	config    *rest.Config
	etcd      *process
	apiserver *process
	// controllers and scheduler are kube-controller-manager and
	// kube-scheduler: with them Deployments get ReplicaSets and Pods,
	// Services get EndpointSlices, and Pods are bound to nodes.
	controllers *process
	scheduler   *process
}

// Config returns a new client configuration for the admin user. Callers may
// change it freely.
func (c *Cluster) Config() *rest.Config {
	return rest.CopyConfig(c.config)
}

// Start builds the binaries if they are not cached yet, starts etcd, then
// kube-apiserver, then kube-controller-manager and kube-scheduler, waits
// until they are ready and returns the cluster. It fails the test if any of
// that fails. The cluster has no node: internal/kubetest/node adds one.
func Start(t testing.TB) *Cluster {
	t.Helper()
	ctx := t.Context()
	begin := time.Now()

	binDir, err := Build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	built := time.Since(begin)

	dir := t.TempDir()
	c := &Cluster{BinDir: binDir, Dir: dir}
	t.Cleanup(func() { c.stop(t) })

	if err := c.startEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.startAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.startControllers(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("kubetest: control plane at %s ready in %s (binaries ready in %s)",
		c.Host, time.Since(begin).Round(time.Millisecond), built.Round(time.Millisecond))
	return c
}

// Build makes sure the binaries are built and returns their folder. It runs
// tools/kube/build.sh, which builds only when its inputs changed and lets one
// process build while others wait.
func Build(ctx context.Context) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "tools", "kube", "build.sh")
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = root
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build the control plane (bash %s): %w\n%s", script, err, stderr.Bytes())
	}
	dir := strings.TrimSpace(stdout.String())
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return "", fmt.Errorf("build the control plane: %w\n%s", err, stderr.Bytes())
		}
	}
	return dir, nil
}

// repoRoot finds the repository from this file's path, so the cache is the
// same whichever package's test asks for it.
func repoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if ok && filepath.IsAbs(file) {
		return filepath.Join(filepath.Dir(file), "..", ".."), nil
	}
	// Built with -trimpath: look upwards from the working directory, which
	// go test sets to the package's folder.
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "tools", "kube", "build.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repository root: no tools/kube/build.sh above the working directory")
		}
		dir = parent
	}
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	bin := filepath.Join(c.BinDir, "etcd")
	logPath := filepath.Join(c.Dir, "etcd.log")
	var lastErr error
	for range startAttempts {
		ports, err := freePorts(2)
		if err != nil {
			return err
		}
		client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
		peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
		data := filepath.Join(c.Dir, "etcd")
		if err := os.RemoveAll(data); err != nil {
			return fmt.Errorf("clear etcd data: %w", err)
		}
		p, err := startProcess("etcd", bin, logPath,
			"--name=kubetest",
			"--data-dir="+data,
			"--listen-client-urls="+client,
			"--advertise-client-urls="+client,
			"--listen-peer-urls="+peer,
			"--initial-advertise-peer-urls="+peer,
			"--initial-cluster=kubetest="+peer,
			"--unsafe-no-fsync", // a test's data need not survive a power cut
			"--log-level=warn",
		)
		if err != nil {
			return err
		}
		c.etcd = p
		hc := &http.Client{Timeout: 2 * time.Second}
		err = waitReady(ctx, p, etcdTimeout, func() error { return get(ctx, hc, client+"/health", "") })
		if err == nil {
			c.EtcdURL = client
			return nil
		}
		if !errors.Is(err, errExited) {
			return fmt.Errorf("%w\n--- etcd log:\n%s", err, p.logTail(logTailBytes))
		}
		lastErr = err
	}
	return fmt.Errorf("start etcd %d times: %w\n--- etcd log:\n%s", startAttempts, lastErr, c.etcd.logTail(logTailBytes))
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	certDir := filepath.Join(c.Dir, "certs")
	if err := os.Mkdir(certDir, 0o700); err != nil {
		return fmt.Errorf("make cert dir: %w", err)
	}
	keys, err := writePKI(certDir)
	if err != nil {
		return err
	}
	c.CAFile, c.ServiceAccountKeyFile = keys.caFile, keys.saKeyFile
	c.Token = rand.Text()
	tokens := filepath.Join(certDir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(c.Token+",admin,admin,system:masters\n"), 0o600); err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(keys.caPEM)
	hc := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	defer hc.CloseIdleConnections()

	bin := filepath.Join(c.BinDir, "kube-apiserver")
	logPath := filepath.Join(c.Dir, "kube-apiserver.log")
	var lastErr error
	for range startAttempts {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		host := "https://127.0.0.1:" + strconv.Itoa(ports[0])
		p, err := startProcess("kube-apiserver", bin, logPath,
			"--etcd-servers="+c.EtcdURL,
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			"--secure-port="+strconv.Itoa(ports[0]),
			"--cert-dir="+certDir,
			"--tls-cert-file="+keys.certFile,
			"--tls-private-key-file="+keys.keyFile,
			"--token-auth-file="+tokens,
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file="+keys.saPubFile,
			"--service-account-signing-key-file="+keys.saKeyFile,
			"--service-cluster-ip-range="+ServiceClusterIPRange,
			"--authorization-mode=RBAC",
			// On loopback the default reconciler warns and rewrites the
			// kubernetes Service's endpoints for nothing.
			"--endpoint-reconciler-type=none",
		)
		if err != nil {
			return err
		}
		c.apiserver = p
		err = waitReady(ctx, p, apiserverTimeout, func() error { return get(ctx, hc, host+"/readyz", c.Token) })
		if err == nil {
			c.Host = host
			c.config = &rest.Config{
				Host:            host,
				BearerToken:     c.Token,
				TLSClientConfig: rest.TLSClientConfig{CAData: keys.caPEM},
				// Tests create many objects quickly; client-go's default of
				// 5 requests a second would make them slow, not safer.
				QPS:   200,
				Burst: 400,
			}
			return c.writeKubeconfig(keys.caPEM)
		}
		if !errors.Is(err, errExited) {
			return fmt.Errorf("%w\n--- kube-apiserver log:\n%s", err, p.logTail(logTailBytes))
		}
		lastErr = err
	}
	return fmt.Errorf("start kube-apiserver %d times: %w\n--- kube-apiserver log:\n%s",
		startAttempts, lastErr, c.apiserver.logTail(logTailBytes))
}

func (c *Cluster) writeKubeconfig(caPEM []byte) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: c.Host, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: c.Token}
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "admin"}
	cfg.CurrentContext = "kubetest"
	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, c.Kubeconfig); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// startControllers starts kube-controller-manager and kube-scheduler as the
// admin, and waits until the controllers work: the service account
// controller has made the default namespace's "default" ServiceAccount.
// Neither serves HTTPS (--secure-port=0): nothing here needs their metrics.
func (c *Cluster) startControllers(ctx context.Context) error {
	kcm, err := startProcess("kube-controller-manager", filepath.Join(c.BinDir, "kube-controller-manager"),
		filepath.Join(c.Dir, "kube-controller-manager.log"),
		"--kubeconfig="+c.Kubeconfig,
		"--secure-port=0",
		"--leader-elect=false",
		"--service-account-private-key-file="+c.ServiceAccountKeyFile,
		"--root-ca-file="+c.CAFile,
		"--use-service-account-credentials=false",
		// Pods of a node that stops reporting are evicted after this.
		"--node-monitor-grace-period=20s",
		// The default of 20 requests a second is for a shared production
		// API server; a test's own cluster serves thousands of objects
		// faster than that.
		"--kube-api-qps=300", "--kube-api-burst=600",
	)
	if err != nil {
		return err
	}
	c.controllers = kcm
	sched, err := startProcess("kube-scheduler", filepath.Join(c.BinDir, "kube-scheduler"),
		filepath.Join(c.Dir, "kube-scheduler.log"),
		"--kubeconfig="+c.Kubeconfig,
		"--secure-port=0",
		"--leader-elect=false",
		"--kube-api-qps=300", "--kube-api-burst=600",
	)
	if err != nil {
		return err
	}
	c.scheduler = sched
	hc := &http.Client{Timeout: 5 * time.Second, Transport: c.transport()}
	defer hc.CloseIdleConnections()
	ready := func() error {
		select {
		case <-sched.exited:
			return fmt.Errorf("kube-scheduler %w: %w\n--- kube-scheduler log:\n%s", errExited, sched.exitErr(), sched.logTail(logTailBytes))
		default:
		}
		return get(ctx, hc, c.Host+"/api/v1/namespaces/default/serviceaccounts/default", c.Token)
	}
	if err := waitReady(ctx, kcm, controllersTimeout, ready); err != nil {
		return fmt.Errorf("%w\n--- kube-controller-manager log:\n%s", err, kcm.logTail(logTailBytes))
	}
	return nil
}

// transport trusts the API server's CA.
func (c *Cluster) transport() *http.Transport {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.config.TLSClientConfig.CAData)
	return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
}

// stop stops the controllers and the scheduler, then kube-apiserver, then
// etcd: with etcd gone first, kube-apiserver ignores SIGTERM for 20 s and
// more. On a failed test it shows their output.
func (c *Cluster) stop(t testing.TB) {
	for _, p := range []*process{c.scheduler, c.controllers, c.apiserver, c.etcd} {
		if p == nil {
			continue
		}
		if err := p.stop(); err != nil {
			t.Log(err)
		}
	}
	if t.Failed() {
		for _, p := range []*process{c.etcd, c.apiserver, c.controllers, c.scheduler} {
			if p != nil {
				t.Logf("--- %s log (%s), last %d KiB:\n%s", p.name, p.logPath, logTailBytes>>10, p.logTail(logTailBytes))
			}
		}
	}
}

// errExited says a server exited before it became ready.
var errExited = errors.New("exited before it was ready")

// waitReady polls ready until it succeeds, the process exits, ctx ends or
// timeout passes. A process that exited is reported with errExited.
func waitReady(ctx context.Context, p *process, timeout time.Duration, ready func() error) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	lastErr := errors.New("not polled yet")
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("%s %w: %w", p.name, errExited, p.exitErr())
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", p.name, ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("%s not ready after %s: %w", p.name, timeout, lastErr)
		case <-tick.C:
			if lastErr = ready(); lastErr == nil {
				return nil
			}
		}
	}
}

// get succeeds if url answers 200, with token as the bearer token if set.
func get(ctx context.Context, hc *http.Client, url, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var body [512]byte
		n, _ := resp.Body.Read(body[:])
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body[:n]))
	}
	return nil
}

// freePorts returns n distinct loopback TCP ports that were free a moment
// ago. A server may still lose one to another process; startEtcd and
// startAPIServer retry on fresh ports when that happens.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		defer l.Close() // hold each until all are picked, so they differ
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
