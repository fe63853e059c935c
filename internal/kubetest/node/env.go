package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// prepare resolves how to start c from img: its env (from the API, as of
// now), working folder and command.
func (pd *pod) prepare(ctx context.Context, c *container, img *image) (*runSpec, error) {
	env, err := pd.env(ctx, c, img)
	if err != nil {
		return nil, err
	}
	lookup := func(name string) (string, bool) {
		for i := len(env) - 1; i >= 0; i-- {
			if k, v, _ := strings.Cut(env[i], "="); k == name {
				return v, true
			}
		}
		return "", false
	}

	workDir := c.spec.WorkingDir
	if workDir == "" {
		workDir = img.config.WorkingDir
	}
	dir := filepath.Join(img.rootfs, filepath.FromSlash(path.Clean("/"+workDir)))

	// Kubernetes: command replaces the image's entrypoint, args its cmd;
	// a command without args drops the image's cmd.
	argv := append([]string(nil), img.config.Entrypoint...)
	args := img.config.Cmd
	if len(c.spec.Command) > 0 {
		argv = expandAll(c.spec.Command, lookup)
		args = nil
	}
	if len(c.spec.Args) > 0 {
		args = expandAll(c.spec.Args, lookup)
	}
	argv = append(argv, args...)
	if len(argv) == 0 {
		return nil, fmt.Errorf("%w: no command in the container or its image", errConfig)
	}
	exe, err := resolveCommand(argv[0], img.rootfs, dir, lookup)
	if err != nil {
		return nil, err
	}
	return &runSpec{path: exe, args: argv, dir: dir, env: env, rootfs: img.rootfs, imageID: img.id}, nil
}

// resolveCommand finds a command's executable: an absolute path inside
// the image if it exists there, else on the host; a relative path with a
// slash from the working folder; a bare name on PATH.
func resolveCommand(name, rootfs, dir string, lookup func(string) (string, bool)) (string, error) {
	switch {
	case strings.HasPrefix(name, "/"):
		inImage := filepath.Join(rootfs, filepath.FromSlash(path.Clean(name)))
		if fi, err := os.Stat(inImage); err == nil && !fi.IsDir() {
			return inImage, nil
		}
		return name, nil
	case strings.Contains(name, "/"):
		return filepath.Join(dir, name), nil
	}
	pathEnv, _ := lookup("PATH")
	if pathEnv == "" {
		pathEnv = os.Getenv("PATH")
	}
	for _, d := range filepath.SplitList(pathEnv) {
		for _, cand := range []string{filepath.Join(rootfs, d, name), filepath.Join(d, name)} {
			if fi, err := os.Stat(cand); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
				return cand, nil
			}
		}
	}
	return "", &exec.Error{Name: name, Err: exec.ErrNotFound}
}

// env is the container's environment: the image's, then envFrom, then env,
// with $(VAR) references expanded; values under a volume's mount path
// rewritten to the volume's folder; PORT set to the container's port on
// 127.0.0.1; HOSTNAME set to the pod's name.
func (pd *pod) env(ctx context.Context, c *container, img *image) ([]string, error) {
	vals := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	lookup := func(k string) (string, bool) { v, ok := vals[k]; return v, ok }
	for _, kv := range img.config.Env {
		k, v, _ := strings.Cut(kv, "=")
		set(k, v)
	}
	if _, ok := vals["PATH"]; !ok {
		set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	ns := pd.spec.Namespace
	for _, from := range c.spec.EnvFrom {
		var data map[string]string
		switch {
		case from.SecretRef != nil:
			s, err := pd.prov.cfg.client.CoreV1().Secrets(ns).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && optional(from.SecretRef.Optional) {
					continue
				}
				return nil, configError(err)
			}
			data = make(map[string]string, len(s.Data))
			for k, v := range s.Data {
				data[k] = string(v)
			}
		case from.ConfigMapRef != nil:
			cm, err := pd.prov.cfg.client.CoreV1().ConfigMaps(ns).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && optional(from.ConfigMapRef.Optional) {
					continue
				}
				return nil, configError(err)
			}
			data = cm.Data
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			set(from.Prefix+k, data[k])
		}
	}
	for _, e := range c.spec.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, lookup))
			continue
		}
		v, ok, err := pd.valueFrom(ctx, e.ValueFrom)
		if err != nil {
			return nil, err
		}
		if ok {
			set(e.Name, v)
		}
	}
	for _, k := range order {
		vals[k] = pd.rewritePath(c, vals[k])
	}
	set("PORT", strconv.Itoa(c.port))
	set("HOSTNAME", pd.spec.Name)
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+vals[k])
	}
	return env, nil
}

func optional(b *bool) bool { return b != nil && *b }

func configError(err error) error { return fmt.Errorf("%w: %w", errConfig, err) }

// valueFrom resolves one env value source; ok is false for a missing
// optional key.
func (pd *pod) valueFrom(ctx context.Context, src *corev1.EnvVarSource) (string, bool, error) {
	ns := pd.spec.Namespace
	switch {
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		s, err := pd.prov.cfg.client.CoreV1().Secrets(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) && optional(ref.Optional) {
				return "", false, nil
			}
			return "", false, configError(err)
		}
		v, ok := s.Data[ref.Key]
		if !ok {
			if optional(ref.Optional) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("%w: couldn't find key %s in Secret %s/%s", errConfig, ref.Key, ns, ref.Name)
		}
		return string(v), true, nil
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		cm, err := pd.prov.cfg.client.CoreV1().ConfigMaps(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) && optional(ref.Optional) {
				return "", false, nil
			}
			return "", false, configError(err)
		}
		v, ok := cm.Data[ref.Key]
		if !ok {
			if optional(ref.Optional) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("%w: couldn't find key %s in ConfigMap %s/%s", errConfig, ref.Key, ns, ref.Name)
		}
		return v, true, nil
	case src.FieldRef != nil:
		pd.mu.Lock()
		defer pd.mu.Unlock()
		switch f := src.FieldRef.FieldPath; f {
		case "metadata.name":
			return pd.spec.Name, true, nil
		case "metadata.namespace":
			return pd.spec.Namespace, true, nil
		case "metadata.uid":
			return string(pd.spec.UID), true, nil
		case "spec.nodeName":
			return pd.spec.Spec.NodeName, true, nil
		case "spec.serviceAccountName":
			return pd.spec.Spec.ServiceAccountName, true, nil
		case "status.podIP":
			return pd.ip.String(), true, nil
		case "status.hostIP":
			return "127.0.0.1", true, nil
		default:
			return "", false, fmt.Errorf("%w: field %s not supported by this node", errConfig, f)
		}
	}
	return "", false, fmt.Errorf("%w: env value source not supported by this node", errConfig)
}

// rewritePath maps a value equal to or under one of c's volume mount paths
// to the folder holding that volume on this machine.
func (pd *pod) rewritePath(c *container, v string) string {
	if !strings.HasPrefix(v, "/") {
		return v
	}
	pd.mu.Lock()
	defer pd.mu.Unlock()
	best, bestDir := "", ""
	for _, m := range c.spec.VolumeMounts {
		mp := path.Clean(m.MountPath)
		if v != mp && !strings.HasPrefix(v, strings.TrimSuffix(mp, "/")+"/") {
			continue
		}
		if local, ok := pd.volumes[m.Name]; ok && len(mp) > len(best) {
			best, bestDir = mp, local
		}
	}
	if best == "" {
		return v
	}
	return filepath.Join(bestDir, filepath.FromSlash(strings.TrimPrefix(v, best)))
}

// expand replaces $(NAME) with NAME's value when defined, and $$ with $,
// as Kubernetes does in env values, commands and args.
func expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func expandAll(ss []string, lookup func(string) (string, bool)) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = expand(s, lookup)
	}
	return out
}

// writeVolumes writes the pod's secret, configMap and emptyDir volumes
// into private folders, and publishes its persistent volumes, retrying
// while a source is missing, until it
// succeeds (true) or the pod stops (false). Other volume types are
// refused in the containers' status.
func (pd *pod) writeVolumes() bool {
	delay := pd.prov.cfg.backoff.initial
	for {
		err := pd.tryWriteVolumes(pd.ctx)
		if err == nil {
			pd.mu.Lock()
			pd.volumesOK = true
			pd.mu.Unlock()
			return true
		}
		pd.log.Warn("write volumes", "err", err)
		for _, c := range pd.containers {
			c.setWaiting("ContainerCreating", err.Error())
		}
		t := time.NewTimer(delay)
		select {
		case <-pd.ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		delay = min(2*delay, pd.prov.cfg.backoff.max)
	}
}

func (pd *pod) tryWriteVolumes(ctx context.Context) error {
	root := filepath.Join(pd.dir, "volumes")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	ns := pd.spec.Namespace
	for _, v := range pd.spec.Spec.Volumes {
		pd.mu.Lock()
		_, done := pd.volumes[v.Name]
		pd.mu.Unlock()
		if done {
			continue
		}
		dir := filepath.Join(root, v.Name)
		var files map[string][]byte
		var items []corev1.KeyToPath
		mode := os.FileMode(0o400)
		switch {
		case v.Secret != nil:
			s, err := pd.prov.cfg.client.CoreV1().Secrets(ns).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
			if err != nil && !(apierrors.IsNotFound(err) && optional(v.Secret.Optional)) {
				return fmt.Errorf("MountVolume.SetUp failed for volume %q: %w", v.Name, err)
			}
			if s != nil {
				files = s.Data
			}
			items = v.Secret.Items
		case v.ConfigMap != nil:
			cm, err := pd.prov.cfg.client.CoreV1().ConfigMaps(ns).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
			if err != nil && !(apierrors.IsNotFound(err) && optional(v.ConfigMap.Optional)) {
				return fmt.Errorf("MountVolume.SetUp failed for volume %q: %w", v.Name, err)
			}
			if cm != nil {
				files = make(map[string][]byte)
				for k, val := range cm.Data {
					files[k] = []byte(val)
				}
				for k, val := range cm.BinaryData {
					files[k] = val
				}
			}
			items = v.ConfigMap.Items
			mode = 0o444
		case v.Projected != nil:
			var err error
			files, err = pd.projected(ctx, v.Projected)
			if err != nil {
				return fmt.Errorf("MountVolume.SetUp failed for volume %q: %w", v.Name, err)
			}
			mode = 0o444
		case v.EmptyDir != nil:
		case v.PersistentVolumeClaim != nil:
			pub, err := pd.publishClaim(ctx, v, dir)
			if err != nil {
				return fmt.Errorf("volume %q: %w", v.Name, err)
			}
			pd.mu.Lock()
			pd.volumes[v.Name] = pub.target
			pd.published = append(pd.published, pub)
			pd.mu.Unlock()
			continue
		default:
			return fmt.Errorf("volume %q: only secret, configMap, projected, emptyDir and CSI persistent volumes are supported by this node", v.Name)
		}
		if err := writeVolume(dir, files, items, mode); err != nil {
			return fmt.Errorf("volume %q: %w", v.Name, err)
		}
		pd.mu.Lock()
		pd.volumes[v.Name] = dir
		pd.mu.Unlock()
	}
	return nil
}

// writeVolume writes files (all, or the items listed) into a new folder
// dir, readable only by this user.
func writeVolume(dir string, files map[string][]byte, items []corev1.KeyToPath, mode os.FileMode) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	write := func(name string, data []byte) error {
		name = path.Clean(name)
		if d := path.Dir(name); d != "." {
			if err := root.MkdirAll(d, 0o700); err != nil {
				return err
			}
		}
		f, err := root.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_EXCL, mode)
		if err != nil {
			return err
		}
		if _, err := f.Write(data); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	if len(items) == 0 {
		for k, v := range files {
			if err := write(k, v); err != nil {
				return err
			}
		}
		return nil
	}
	for _, it := range items {
		data, ok := files[it.Key]
		if !ok {
			return fmt.Errorf("key %s not found", it.Key)
		}
		if err := write(it.Path, data); err != nil {
			return err
		}
	}
	return nil
}

// projected gathers a projected volume's files: secrets', configMaps',
// service account tokens (requested from the API) and the pod's namespace,
// name and labels from the downward API.
func (pd *pod) projected(ctx context.Context, v *corev1.ProjectedVolumeSource) (map[string][]byte, error) {
	ns := pd.spec.Namespace
	files := make(map[string][]byte)
	pick := func(data map[string][]byte, items []corev1.KeyToPath) error {
		if len(items) == 0 {
			for k, val := range data {
				files[k] = val
			}
			return nil
		}
		for _, it := range items {
			val, ok := data[it.Key]
			if !ok {
				return fmt.Errorf("key %s not found", it.Key)
			}
			files[it.Path] = val
		}
		return nil
	}
	for _, src := range v.Sources {
		switch {
		case src.Secret != nil:
			s, err := pd.prov.cfg.client.CoreV1().Secrets(ns).Get(ctx, src.Secret.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && optional(src.Secret.Optional) {
					continue
				}
				return nil, err
			}
			if err := pick(s.Data, src.Secret.Items); err != nil {
				return nil, err
			}
		case src.ConfigMap != nil:
			cm, err := pd.prov.cfg.client.CoreV1().ConfigMaps(ns).Get(ctx, src.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && optional(src.ConfigMap.Optional) {
					continue
				}
				return nil, err
			}
			data := make(map[string][]byte)
			for k, val := range cm.Data {
				data[k] = []byte(val)
			}
			if err := pick(data, src.ConfigMap.Items); err != nil {
				return nil, err
			}
		case src.ServiceAccountToken != nil:
			sa := pd.spec.Spec.ServiceAccountName
			if sa == "" {
				sa = "default"
			}
			tr := &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
				ExpirationSeconds: src.ServiceAccountToken.ExpirationSeconds,
				BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pd.spec.Name, UID: pd.uid},
			}}
			if src.ServiceAccountToken.Audience != "" {
				tr.Spec.Audiences = []string{src.ServiceAccountToken.Audience}
			}
			out, err := pd.prov.cfg.client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
			if err != nil {
				return nil, fmt.Errorf("service account token: %w", err)
			}
			files[src.ServiceAccountToken.Path] = []byte(out.Status.Token)
		case src.DownwardAPI != nil:
			for _, it := range src.DownwardAPI.Items {
				if it.FieldRef == nil {
					continue
				}
				val, ok, err := pd.valueFrom(ctx, &corev1.EnvVarSource{FieldRef: it.FieldRef})
				if err != nil || !ok {
					continue // not supported here: left out
				}
				files[it.Path] = []byte(val)
			}
		}
	}
	return files, nil
}
