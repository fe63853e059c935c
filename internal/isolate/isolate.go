// Package isolate holds what keeps apps apart on one machine when the
// server runs as root:
//
//   - users: each platform claims a block of user IDs for good (Claim), and
//     each app runs as a user of that block that no other app ever gets;
//   - cgroups: every process an app starts, however it detaches, stays in a
//     cgroup that a stop, a build timeout or the app's destruction ends
//     whole (Tracker, Kill);
//   - files: a tree root made is given to an app without root walking a
//     path the app can already change (GiveTree);
//   - ports: the kernel says which user owns a listening socket
//     (ListenerOwners), so a port taken by another app is noticed.
//
// The runtime, the build runner and the reconciler use it; it imports
// nothing of the platform's own.
package isolate
