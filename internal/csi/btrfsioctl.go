package csi

// The few btrfs ioctls the plugin needs, called directly rather than through
// the btrfs command: errors come back as errno values (ENOSPC, EDQUOT,
// EEXIST) that map to gRPC codes without reading a tool's output, and a
// snapshot costs one system call instead of a process. The layouts follow
// linux/btrfs.h and linux/btrfs_tree.h; btrfsioctl_test.go checks them
// against a real filesystem.

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	iocResize        = 0x50009403 // BTRFS_IOC_RESIZE, btrfs_ioctl_vol_args
	iocSubvolCreate  = 0x5000940e // BTRFS_IOC_SUBVOL_CREATE, btrfs_ioctl_vol_args
	iocSnapDestroy   = 0x5000940f // BTRFS_IOC_SNAP_DESTROY, btrfs_ioctl_vol_args
	iocTreeSearch    = 0xd0009411 // BTRFS_IOC_TREE_SEARCH, btrfs_ioctl_search_args
	iocInoLookup     = 0xd0009412 // BTRFS_IOC_INO_LOOKUP, btrfs_ioctl_ino_lookup_args
	iocSnapCreateV2  = 0x50009417 // BTRFS_IOC_SNAP_CREATE_V2, btrfs_ioctl_vol_args_v2
	iocSnapDestroyV2 = 0x5000943f // BTRFS_IOC_SNAP_DESTROY_V2, btrfs_ioctl_vol_args_v2
	iocQuotaCtl      = 0xc0109428 // BTRFS_IOC_QUOTA_CTL, btrfs_ioctl_quota_ctl_args
	iocQgroupLimit   = 0x8030942b // BTRFS_IOC_QGROUP_LIMIT, btrfs_ioctl_qgroup_limit_args

	subvolReadOnly     = 1 << 1 // BTRFS_SUBVOL_RDONLY
	subvolSpecByID     = 1 << 4 // BTRFS_SUBVOL_SPEC_BY_ID
	quotaCtlEnable     = 1      // BTRFS_QUOTA_CTL_ENABLE
	qgroupLimitMaxRfer = 1 << 0 // BTRFS_QGROUP_LIMIT_MAX_RFER

	rootTreeID        = 1   // BTRFS_ROOT_TREE_OBJECTID
	quotaTreeID       = 8   // BTRFS_QUOTA_TREE_OBJECTID
	rootRefKey        = 156 // BTRFS_ROOT_REF_KEY
	qgroupStatusKey   = 240 // BTRFS_QGROUP_STATUS_KEY
	qgroupInfoKey     = 242 // BTRFS_QGROUP_INFO_KEY
	qgroupLimitKey    = 244 // BTRFS_QGROUP_LIMIT_KEY
	qgroupInconsisent = 1 << 2

	firstFreeObjectID = 256 // BTRFS_FIRST_FREE_OBJECTID: the root folder of every subvolume

	btrfsSuperMagic = 0x9123683e // statfs f_type of btrfs
)

// volArgs is struct btrfs_ioctl_vol_args.
type volArgs struct {
	fd   int64
	name [4088]byte
}

// volArgsV2 is struct btrfs_ioctl_vol_args_v2.
type volArgsV2 struct {
	fd      int64
	transid uint64
	flags   uint64
	unused  [4]uint64
	name    [4040]byte
}

// inoLookupArgs is struct btrfs_ioctl_ino_lookup_args.
type inoLookupArgs struct {
	treeID   uint64
	objectID uint64
	name     [4080]byte
}

// quotaCtlArgs is struct btrfs_ioctl_quota_ctl_args.
type quotaCtlArgs struct {
	cmd    uint64
	status uint64
}

// qgroupLimitArgs is struct btrfs_ioctl_qgroup_limit_args.
type qgroupLimitArgs struct {
	qgroupID uint64
	flags    uint64
	maxRfer  uint64
	maxExcl  uint64
	rsvRfer  uint64
	rsvExcl  uint64
}

// searchKey is struct btrfs_ioctl_search_key; searchArgs adds the result
// buffer (struct btrfs_ioctl_search_args).
type searchKey struct {
	treeID      uint64
	minObjectID uint64
	maxObjectID uint64
	minOffset   uint64
	maxOffset   uint64
	minTransID  uint64
	maxTransID  uint64
	minType     uint32
	maxType     uint32
	nrItems     uint32
	unused      uint32
	unused1     [4]uint64
}

type searchArgs struct {
	key searchKey
	buf [4096 - 104]byte
}

// Compile-time checks of the layouts' sizes.
var (
	_ [4096]byte = [unsafe.Sizeof(volArgs{})]byte{}
	_ [4096]byte = [unsafe.Sizeof(volArgsV2{})]byte{}
	_ [4096]byte = [unsafe.Sizeof(inoLookupArgs{})]byte{}
	_ [16]byte   = [unsafe.Sizeof(quotaCtlArgs{})]byte{}
	_ [48]byte   = [unsafe.Sizeof(qgroupLimitArgs{})]byte{}
	_ [104]byte  = [unsafe.Sizeof(searchKey{})]byte{}
	_ [4096]byte = [unsafe.Sizeof(searchArgs{})]byte{}
)

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}

// setName copies a single path component into an ioctl's name field.
func setName(dst []byte, name string) error {
	if len(name) == 0 || len(name) >= len(dst) {
		return fmt.Errorf("subvolume name %q: bad length", name)
	}
	copy(dst, name)
	return nil
}

// btrfsSubvolCreate makes an empty subvolume called name in the folder dirFD.
func btrfsSubvolCreate(dirFD int, name string) error {
	var a volArgs
	if err := setName(a.name[:], name); err != nil {
		return err
	}
	return ioctl(dirFD, iocSubvolCreate, unsafe.Pointer(&a))
}

// btrfsSnapshot makes name in the folder dirFD a snapshot of the subvolume
// open as srcFD; read-only for a snapshot, writable for a clone.
func btrfsSnapshot(srcFD, dirFD int, name string, readOnly bool) error {
	a := volArgsV2{fd: int64(srcFD)}
	if readOnly {
		a.flags = subvolReadOnly
	}
	if err := setName(a.name[:], name); err != nil {
		return err
	}
	return ioctl(dirFD, iocSnapCreateV2, unsafe.Pointer(&a))
}

// btrfsSubvolDelete deletes the subvolume called name in the folder dirFD,
// whatever it holds (the kernel frees its blocks in the background).
func btrfsSubvolDelete(dirFD int, name string) error {
	var a volArgs
	if err := setName(a.name[:], name); err != nil {
		return err
	}
	return ioctl(dirFD, iocSnapDestroy, unsafe.Pointer(&a))
}

// btrfsSubvolDeleteID deletes the subvolume with the id, wherever it is in
// the filesystem of fd: no path is looked up, so none can be swapped.
func btrfsSubvolDeleteID(fd int, id uint64) error {
	a := volArgsV2{flags: subvolSpecByID}
	binary.NativeEndian.PutUint64(a.name[:8], id)
	return ioctl(fd, iocSnapDestroyV2, unsafe.Pointer(&a))
}

// btrfsChildSubvols lists the ids of the subvolumes made directly inside
// the subvolume id (by whoever could write there).
func btrfsChildSubvols(fd int, id uint64) ([]uint64, error) {
	var out []uint64
	var a searchArgs
	a.key = searchKey{
		treeID:      rootTreeID,
		minObjectID: id,
		maxObjectID: id,
		minType:     rootRefKey,
		maxType:     rootRefKey,
		maxOffset:   ^uint64(0),
		maxTransID:  ^uint64(0),
	}
	for {
		a.key.nrItems = 4096
		if err := ioctl(fd, iocTreeSearch, unsafe.Pointer(&a)); err != nil {
			return nil, err
		}
		if a.key.nrItems == 0 {
			return out, nil
		}
		var offset uint64
		pos := 0
		for range a.key.nrItems {
			h := a.buf[pos : pos+32]
			offset = binary.NativeEndian.Uint64(h[16:])
			if binary.NativeEndian.Uint32(h[24:]) == rootRefKey {
				out = append(out, offset)
			}
			pos += 32 + int(binary.NativeEndian.Uint32(h[28:]))
		}
		if offset == ^uint64(0) {
			return out, nil
		}
		a.key.minOffset = offset + 1
	}
}

// btrfsSubvolID returns the id of the subvolume that holds the open file fd.
func btrfsSubvolID(fd int) (uint64, error) {
	a := inoLookupArgs{objectID: firstFreeObjectID}
	if err := ioctl(fd, iocInoLookup, unsafe.Pointer(&a)); err != nil {
		return 0, err
	}
	return a.treeID, nil
}

// btrfsQuotaEnable turns on quota groups for the filesystem of fd; a no-op
// when they are on already.
func btrfsQuotaEnable(fd int) error {
	a := quotaCtlArgs{cmd: quotaCtlEnable}
	return ioctl(fd, iocQuotaCtl, unsafe.Pointer(&a))
}

// btrfsLimitReferenced caps the bytes the subvolume of fd references.
func btrfsLimitReferenced(fd int, limit uint64) error {
	a := qgroupLimitArgs{flags: qgroupLimitMaxRfer, maxRfer: limit}
	return ioctl(fd, iocQgroupLimit, unsafe.Pointer(&a))
}

// btrfsResizeMax grows the filesystem of fd to fill its (grown) device.
func btrfsResizeMax(fd int) error {
	var a volArgs
	if err := setName(a.name[:], "max"); err != nil {
		return err
	}
	return ioctl(fd, iocResize, unsafe.Pointer(&a))
}

// qgroupUsage is a level-0 quota group's counters: what its subvolume
// references (shared or not) and holds exclusively, in bytes.
type qgroupUsage struct {
	Referenced int64
	Exclusive  int64
}

// btrfsQgroups reads every level-0 quota group's counters from the quota
// tree of the filesystem of fd, and whether the kernel marked the counters
// inconsistent (they are then being rescanned, or need a rescan). The
// counters are updated when a transaction commits (every 30 s by default,
// or on sync).
func btrfsQgroups(fd int) (map[uint64]qgroupUsage, bool, error) {
	out := make(map[uint64]qgroupUsage)
	inconsistent := false
	var a searchArgs
	a.key = searchKey{
		treeID: quotaTreeID,
		// Status and info items have the key (0, type, qgroup id).
		maxOffset:  ^uint64(0),
		maxTransID: ^uint64(0),
		minType:    qgroupStatusKey,
		maxType:    qgroupInfoKey,
	}
	for {
		a.key.nrItems = 4096
		if err := ioctl(fd, iocTreeSearch, unsafe.Pointer(&a)); err != nil {
			return nil, false, err
		}
		if a.key.nrItems == 0 {
			return out, inconsistent, nil
		}
		var objectID, offset uint64
		var typ uint32
		pos := 0
		for range a.key.nrItems {
			// struct btrfs_ioctl_search_header: transid, objectid, offset,
			// type, len; the item follows, little-endian on disk.
			h := a.buf[pos : pos+32]
			objectID = binary.NativeEndian.Uint64(h[8:])
			offset = binary.NativeEndian.Uint64(h[16:])
			typ = binary.NativeEndian.Uint32(h[24:])
			n := int(binary.NativeEndian.Uint32(h[28:]))
			item := a.buf[pos+32 : pos+32+n]
			pos += 32 + n
			switch {
			case typ == qgroupStatusKey && n >= 24:
				// version, generation, flags, ...
				inconsistent = binary.LittleEndian.Uint64(item[16:])&qgroupInconsisent != 0
			case typ == qgroupInfoKey && n >= 40 && offset>>48 == 0:
				// generation, rfer, rfer_cmpr, excl, excl_cmpr
				out[offset&(1<<48-1)] = qgroupUsage{
					Referenced: int64(binary.LittleEndian.Uint64(item[8:])),
					Exclusive:  int64(binary.LittleEndian.Uint64(item[24:])),
				}
			}
		}
		// Continue after the last key returned.
		a.key.minObjectID, a.key.minType, a.key.minOffset = objectID, typ, offset
		if a.key.minOffset < ^uint64(0) {
			a.key.minOffset++
		} else if a.key.minType < qgroupInfoKey {
			a.key.minType++
			a.key.minOffset = 0
		} else {
			return out, inconsistent, nil
		}
	}
}
