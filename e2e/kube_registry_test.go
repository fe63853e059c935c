package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"paddock.dev/paddock/internal/kubetest"
	"paddock.dev/paddock/internal/kubetest/node"
	"paddock.dev/paddock/internal/testenv"
)

// TestKubernetesRegistryLogins: the registry's logins are kept sealed in
// the store and never shown; Paddock pushes with the push login, and the
// nodes pull with the pull login, which is all the cluster holds: a
// read-only login is enough for them.
func TestKubernetesRegistryLogins(t *testing.T) {
	pushPassword, pullPassword := randomValue("push-"), randomValue("pull-")
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, pw, _ := r.BasicAuth()
		pusher := u == "pusher" && pw == pushPassword
		puller := u == "puller" && pw == pullPassword && (r.Method == http.MethodGet || r.Method == http.MethodHead)
		if !pusher && !puller {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "wrong credentials", http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	c := kubetest.Start(t)
	node.Start(t, c, node.Options{})
	cs, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		t.Fatal(err)
	}
	p := testenv.Start(t, "--runtime", "kubernetes", "--kubeconfig", c.Kubeconfig, "--registry", host+"/paddock", "--registry-insecure")

	p.MustRun("apps", "create", "shop")
	p.MustRun("config", "set", "shop", "NAME=shop")
	app := tenantApp(t, kubeWeb)
	// Without a login the push is refused, and the deploy says so.
	if out, errOut, err := p.Run("deploy", app, "--app", "shop"); err == nil || !strings.Contains(out+errOut, "401") && !strings.Contains(out+errOut, "UNAUTHORIZED") {
		t.Errorf("deploy without a registry login: err %v; want it refused by the registry\n%s\n%s", err, out, errOut)
	}

	// Bad input.
	for _, tc := range []struct {
		args  []string
		stdin string
		want  string
	}{
		{[]string{"registry", "login"}, pushPassword, "user name"},
		{[]string{"registry", "login", "--username", "pusher"}, "", "no password"},
	} {
		if _, errOut, err := p.RunIn("", strings.NewReader(tc.stdin), tc.args...); err == nil || !strings.Contains(errOut, tc.want) {
			t.Errorf("paddock %s: err %v, stderr %q; want it refused (%q)", strings.Join(tc.args, " "), err, errOut, tc.want)
		}
	}

	if out, errOut, err := p.RunIn("", strings.NewReader(pushPassword+"\n"), "registry", "login", "--username", "pusher"); err != nil {
		t.Fatalf("registry login: %v\n%s\n%s", err, out, errOut)
	}
	// The login outlives the server.
	p.Stop()
	p.Up()
	if out, errOut, err := p.Run("deploy", app, "--app", "shop"); err != nil {
		t.Fatalf("deploy with the push login: %v\n%s\n%s", err, out, errOut)
	}
	serving(t, p, "shop.localhost", "shop")
	if got := pullLogin(t, cs, "paddock-shop"); got != "pusher:"+pushPassword {
		t.Errorf("without a pull login, the pull secret holds %q, want the push login", got)
	}

	// A read-only login for the nodes: the cluster no longer holds the
	// push password, and new pods pull with the new login.
	if out, errOut, err := p.RunIn("", strings.NewReader(pullPassword), "registry", "login", "--pull", "--username", "puller"); err != nil {
		t.Fatalf("registry login --pull: %v\n%s\n%s", err, out, errOut)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if got := pullLogin(t, cs, "paddock-shop"); got != "puller:"+pullPassword {
			return fmt.Errorf("pull secret holds the login of %q", strings.Split(got, ":")[0])
		}
		return nil
	})
	p.MustRun("config", "set", "shop", "NAME=pulled-with-the-pull-login")
	serving(t, p, "shop.localhost", "pulled-with-the-pull-login")

	show := p.MustRun("registry")
	if !strings.Contains(show, "pusher") || !strings.Contains(show, "puller") {
		t.Errorf("registry does not name the logins:\n%s", show)
	}
	surfaces := map[string]string{"registry": show, "registry --json": p.MustRun("registry", "--json"), "server log": p.ServerLog(),
		"audit": p.MustRun("audit", "list", "--json")}
	filepath.WalkDir(p.Data, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			b, _ := os.ReadFile(path)
			surfaces["file "+strings.TrimPrefix(path, p.Data)] = string(b)
		}
		return nil
	})
	for where, text := range surfaces {
		for _, pw := range []string{pushPassword, pullPassword} {
			for _, form := range forms(pw) {
				if strings.Contains(text, form) {
					t.Errorf("%s shows a registry password (as %q)", where, form)
				}
			}
		}
	}

	// Forgetting the pull login gives the nodes the push login again.
	p.MustRun("registry", "logout", "--pull")
	testenv.Eventually(t, 30*time.Second, func() error {
		if got := pullLogin(t, cs, "paddock-shop"); got != "pusher:"+pushPassword {
			return fmt.Errorf("pull secret holds the login of %q, want pusher", strings.Split(got, ":")[0])
		}
		return nil
	})
}

// pullLogin returns "user:password" of the pull secret of ns.
func pullLogin(t *testing.T, cs kubernetes.Interface, ns string) string {
	t.Helper()
	s, err := cs.CoreV1().Secrets(ns).Get(t.Context(), "registry", metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	var cfg struct {
		Auths map[string]struct{ Username, Password string } `json:"auths"`
	}
	if err := json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &cfg); err != nil {
		t.Fatal(err)
	}
	for _, a := range cfg.Auths {
		return a.Username + ":" + a.Password
	}
	return ""
}
