// Package csi is Paddock's built-in storage, served as a Container Storage
// Interface plugin: the Identity, Controller and Node services of one node
// over gRPC on a unix socket, so that Paddock's volume layer (a CSI client)
// uses it like any other plugin, and so could Kubernetes or Nomad. It
// passes the official conformance suite, csi-sanity.
//
// Two backends keep the volumes, in the pool folder given in Config:
//
//   - btrfs, where the plugin runs as root with loop devices: a sparse image
//     file formatted btrfs, mounted from a loop device. A volume is a
//     subvolume whose size is a quota group limit the kernel enforces
//     (writes past it fail with "Disk quota exceeded"); a snapshot is a
//     read-only snapshot of it, taken at once whatever its size; a clone or
//     a restore is a writable snapshot; growing a volume raises its limit
//     while it is in use, and grows the image when the pool needs room.
//   - folders, elsewhere: plain folders, full copies for snapshots, usage
//     measured by walking. Sizes are not enforced, and the plugin says so
//     (Plugin.Enforced, and the GetPluginInfo manifest).
//
// A volume's root folder belongs to the user and group given when it is
// created (the app's), mode 0700. The plugin never reads or writes inside a
// volume on btrfs; on folders it copies and measures through os.Root,
// following no link an app planted. Target paths are reached without
// following symbolic links either.
//
// Volume and snapshot ids, names and sizes live in the pool, beside the
// data: they and the pool survive restarts of the plugin and of the
// machine.
//
// Only the composition root (and the hidden `paddock csi` command that runs
// the plugin on its own) imports this package; everything else talks CSI.
package csi
