package csi

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Checks of what callers send, shared by the services.

// CreateVolume parameters.
const (
	// ParamUID and ParamGID give the volume's root folder to a user and
	// group (decimal ids); it is made 0700, so only that user (and root)
	// can reach its files. Default: root. A volume made from a snapshot or
	// a volume keeps its source's owner; giving another is an error.
	ParamUID = "uid"
	ParamGID = "gid"
)

// maxNameLength is the longest name CSI lets a CO send.
const maxNameLength = 128

// minVolumeSize is the smallest volume: below it btrfs's own metadata
// would not fit under the limit.
const minVolumeSize = 1 << 20

func invalid(format string, a ...any) error {
	return status.Errorf(codes.InvalidArgument, format, a...)
}

// checkName checks a volume's or a snapshot's name.
func checkName(what, name string) error {
	switch {
	case name == "":
		return invalid("the %s has no name", what)
	case len(name) > maxNameLength:
		return invalid("the %s name is %d bytes long; at most %d", what, len(name), maxNameLength)
	case strings.ContainsRune(name, 0):
		return invalid("the %s name holds a NUL byte", what)
	}
	return nil
}

// checkCapability says what the plugin cannot do of a capability, or nil:
// it serves mounted folders on one node.
func checkCapability(c *csi.VolumeCapability) error {
	if c == nil {
		return invalid("a volume capability is empty")
	}
	switch t := c.GetAccessType().(type) {
	case *csi.VolumeCapability_Mount:
		if fs := t.Mount.GetFsType(); fs != "" && fs != "btrfs" {
			return invalid("volumes are folders of a btrfs pool; the filesystem type %q cannot be given", fs)
		}
		if f := t.Mount.GetMountFlags(); len(f) > 0 {
			return invalid("mount flags (%s) are not supported; ask for read-only publishing instead", strings.Join(f, ","))
		}
	case *csi.VolumeCapability_Block:
		return invalid("block volumes are not supported; ask for a mounted volume")
	default:
		return invalid("a volume capability has no access type; ask for a mounted volume")
	}
	switch m := c.GetAccessMode().GetMode(); m {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER:
	case csi.VolumeCapability_AccessMode_UNKNOWN:
		return invalid("a volume capability has no access mode")
	default:
		return invalid("the access mode %s is not supported: volumes live on one node", m)
	}
	return nil
}

func checkCapabilities(caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return invalid("no volume capabilities given")
	}
	for _, c := range caps {
		if err := checkCapability(c); err != nil {
			return err
		}
	}
	return nil
}

// volumeSize picks a size in the capacity range: the required bytes, or
// def when none are required, within the limit, and never below 1 MiB.
func volumeSize(r *csi.CapacityRange, def int64) (int64, error) {
	req, lim := r.GetRequiredBytes(), r.GetLimitBytes()
	switch {
	case req < 0 || lim < 0:
		return 0, invalid("the capacity range (required %d, limit %d bytes) is negative", req, lim)
	case lim > 0 && req > lim:
		return 0, invalid("the capacity range requires %d bytes, more than its limit of %d", req, lim)
	}
	size := req
	if size == 0 {
		size = def
		if lim > 0 {
			size = min(size, lim)
		}
	}
	if size < minVolumeSize {
		if lim > 0 && lim < minVolumeSize {
			return 0, status.Errorf(codes.OutOfRange, "a volume is at least %s; the limit asked for is %d bytes", formatBytes(minVolumeSize), lim)
		}
		size = minVolumeSize
	}
	return size, nil
}

// fits reports whether a volume of size bytes meets the capacity range.
func fits(size int64, r *csi.CapacityRange) bool {
	return size >= r.GetRequiredBytes() && (r.GetLimitBytes() == 0 || size <= r.GetLimitBytes())
}

// owner is the user and group a volume belongs to; set tells whether the
// caller gave them.
type owner struct {
	UID, GID int
	Set      bool
}

// knownParam reports keys Kubernetes' external provisioner and snapshotter
// add on their own, which carry no meaning for this plugin.
func knownParam(key string) bool {
	return strings.HasPrefix(key, "csi.storage.k8s.io/")
}

// volumeParams reads the CreateVolume parameters; an unknown key is an
// error, so that a typo does not go unnoticed.
func volumeParams(params map[string]string) (owner, error) {
	var o owner
	uid, hasUID := params[ParamUID]
	gid, hasGID := params[ParamGID]
	for k := range params {
		if k != ParamUID && k != ParamGID && !knownParam(k) {
			return o, invalid("unknown parameter %q: the parameters are %s and %s", k, ParamUID, ParamGID)
		}
	}
	if hasUID != hasGID {
		return o, invalid("give both the %s and %s parameters, or neither", ParamUID, ParamGID)
	}
	if !hasUID {
		return o, nil
	}
	var err error
	if o.UID, err = parseID(ParamUID, uid); err != nil {
		return o, err
	}
	if o.GID, err = parseID(ParamGID, gid); err != nil {
		return o, err
	}
	o.Set = true
	return o, nil
}

func parseID(key, v string) (int, error) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n == 1<<32-1 {
		return 0, invalid("the %s parameter %q is not a user or group id (a whole number)", key, v)
	}
	return int(n), nil
}

// snapshotParams checks the CreateSnapshot parameters: there are none.
func snapshotParams(params map[string]string) error {
	for k := range params {
		if !knownParam(k) {
			return invalid("unknown parameter %q: snapshots take no parameters", k)
		}
	}
	return nil
}

// page returns the ids after the token (the last id of the previous page),
// at most max of them (0: all), and the token for the next page. The ids
// are sorted; a token whose id was deleted since still works.
func page(ids []string, token string, max int32, pattern func(string) bool) ([]string, string, error) {
	if max < 0 {
		return nil, "", invalid("max_entries is negative (%d)", max)
	}
	if token != "" && !pattern(token) {
		return nil, "", status.Errorf(codes.Aborted, "the starting token %q is not one this plugin gave; list again from the start", token)
	}
	slices.Sort(ids)
	start, _ := slices.BinarySearch(ids, token)
	if start < len(ids) && ids[start] == token {
		start++
	}
	ids = ids[start:]
	if max == 0 || int(max) >= len(ids) {
		return ids, "", nil
	}
	return ids[:max], ids[max-1], nil
}

// fmtSource describes where a volume's content came from, for messages.
func fmtSource(fromSnapshot, fromVolume string) string {
	switch {
	case fromSnapshot != "":
		return "snapshot " + fromSnapshot
	case fromVolume != "":
		return "volume " + fromVolume
	}
	return "nothing (empty)"
}

// describe is a volume for messages: its id and name.
func (v *volumeRecord) describe() string {
	return fmt.Sprintf("%s (%q)", v.ID, v.Name)
}
