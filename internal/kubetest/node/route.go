package node

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ensureLocalRoute makes PodCIDR's addresses local to this machine, on
// the loopback interface, as 127.0.0.0/8 is: a "local" route in the kernel's
// local table (what `ip route add local 198.18.0.0/15 dev lo` adds). Then
// any address of the range can be bound and connected to, and packets to
// them never leave the machine. The route is added once per machine (boot)
// and left in place for other tests; adding it needs CAP_NET_ADMIN (root).
// Without it, and without the route, Start fails and says how to add it.
func ensureLocalRoute() error {
	probe := podRange().Addr().Next()
	if canBind(probe.String()) {
		return nil
	}
	err := addLocalRoute()
	if err == nil && canBind(probe.String()) {
		return nil
	}
	if err == nil {
		err = errors.New("route added, address still not bindable")
	}
	return fmt.Errorf("pod addresses %s are not local to this machine and the route cannot be added (%w): "+
		"run the tests as root, or add it once as root: ip route add local %s dev lo", PodCIDR, err, PodCIDR)
}

func canBind(ip string) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// addLocalRoute sends RTM_NEWROUTE for "local PodCIDR dev lo table local"
// over rtnetlink.
func addLocalRoute() error {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("bind", err)
	}

	dst := podRange().Addr().As4()
	oif := make([]byte, 4)
	*(*uint32)(unsafe.Pointer(&oif[0])) = uint32(lo.Index)
	attrs := append(rtattr(unix.RTA_DST, dst[:]), rtattr(unix.RTA_OIF, oif)...)

	rtm := unix.RtMsg{
		Family:   unix.AF_INET,
		Dst_len:  uint8(podRange().Bits()),
		Table:    unix.RT_TABLE_LOCAL,
		Protocol: unix.RTPROT_BOOT,
		Scope:    unix.RT_SCOPE_HOST,
		Type:     unix.RTN_LOCAL,
	}
	body := append((*[unix.SizeofRtMsg]byte)(unsafe.Pointer(&rtm))[:], attrs...)
	hdr := unix.NlMsghdr{
		Len:   uint32(unix.SizeofNlMsghdr + len(body)),
		Type:  unix.RTM_NEWROUTE,
		Flags: unix.NLM_F_REQUEST | unix.NLM_F_ACK | unix.NLM_F_CREATE | unix.NLM_F_EXCL,
		Seq:   1,
	}
	msg := append((*[unix.SizeofNlMsghdr]byte)(unsafe.Pointer(&hdr))[:], body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("sendto", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return os.NewSyscallError("recvfrom", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
			errno := -int32(*(*uint32)(unsafe.Pointer(&m.Data[0])))
			if errno != 0 && syscall.Errno(errno) != syscall.EEXIST {
				return os.NewSyscallError("RTM_NEWROUTE", syscall.Errno(errno))
			}
		}
	}
	return nil
}

// rtattr encodes one route attribute, padded to 4 bytes.
func rtattr(typ uint16, data []byte) []byte {
	l := unix.SizeofRtAttr + len(data)
	b := make([]byte, (l+3)&^3)
	a := (*unix.RtAttr)(unsafe.Pointer(&b[0]))
	a.Len = uint16(l)
	a.Type = typ
	copy(b[unix.SizeofRtAttr:], data)
	return b
}
