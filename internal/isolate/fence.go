package isolate

import (
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// The ports the platform gives instances (their $PORT), from PortLow to
// PortHigh-1: below Linux's ephemeral ports (32768 and up by default), so
// that no outgoing connection can hold one an instance is about to bind.
const (
	PortLow  = 20000
	PortHigh = 30000
)

// Fence keeps apps from taking or reaching each other's instance ports. It
// attaches eBPF programs to the platform's cgroup, so they apply to every
// process of every app, builds included, and to nothing else on the
// machine (the router and the health checks run outside it). They consult
// a map of the ports given to instances and the user each belongs to
// (Assign, Release):
//
//   - bind: a port given to another app's instance, or an instance port
//     given to none, is refused (EPERM): no app can squat on another's
//     port. An app's own instance port is bound on loopback whatever
//     address it asked for (0.0.0.0 and other IPv4 addresses become
//     127.0.0.1; :: and other IPv6 ones but ::1 become ::ffff:127.0.0.1,
//     which a dual-stack socket takes, and an IPv6-only one is refused),
//     so that the network reaches instances only through the router;
//   - connect, and UDP sends: to another app's instance port on this
//     machine (127.0.0.0/8, 0.0.0.0, ::1, ::, and their IPv4-mapped forms)
//     is refused: an app reaches another only through the router, and
//     cannot hand it a forged X-Forwarded-For. Other ports, local services
//     in the instance range included, are left alone.
//
// The programs stay attached while the cgroup exists, across restarts of
// the server, with the map they were loaded with; a later Fence loads a
// new map from the ports given now, then replaces them.
func (t *Tracker) Fence(ports map[int]uint32) error {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "paddock_ports", Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 65536})
	if err != nil {
		return fmt.Errorf("fence apps: make the port map: %w", err)
	}
	for port, uid := range ports {
		if err := m.Put(uint32(port), uid); err != nil {
			m.Close()
			return fmt.Errorf("fence apps: %w", err)
		}
	}
	dir, err := os.Open(t.dir)
	if err != nil {
		m.Close()
		return fmt.Errorf("fence apps: %w", err)
	}
	defer dir.Close()
	for _, p := range []struct {
		attach ebpf.AttachType
		insns  asm.Instructions
	}{
		{ebpf.AttachCGroupInet4Bind, program(m, bind4)},
		{ebpf.AttachCGroupInet6Bind, program(m, bind6)},
		{ebpf.AttachCGroupInet4Connect, program(m, reach4)},
		{ebpf.AttachCGroupInet6Connect, program(m, reach6)},
		{ebpf.AttachCGroupUDP4Sendmsg, program(m, reach4)},
		{ebpf.AttachCGroupUDP6Sendmsg, program(m, reach6)},
	} {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name: "paddock_fence", Type: ebpf.CGroupSockAddr, AttachType: p.attach,
			Instructions: p.insns, License: "Apache-2.0",
		})
		if err != nil {
			m.Close()
			return fmt.Errorf("fence apps: load the %s program: %w", p.attach, err)
		}
		err = link.RawAttachProgram(link.RawAttachProgramOptions{Target: int(dir.Fd()), Program: prog, Attach: p.attach})
		prog.Close() // the cgroup holds it now, and it the map
		if err != nil {
			m.Close()
			return fmt.Errorf("fence apps: attach the %s program to %s: %w", p.attach, t.dir, err)
		}
	}
	t.mu.Lock()
	if t.ports != nil {
		t.ports.Close()
	}
	t.ports = m
	t.mu.Unlock()
	return nil
}

// Assign gives port to the instances of the app user uid: from now on only
// that user may bind it, and no other app may reach it but through the
// router. Without a fence it does nothing.
func (t *Tracker) Assign(port int, uid uint32) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ports == nil {
		return nil
	}
	if err := t.ports.Put(uint32(port), uid); err != nil {
		return fmt.Errorf("assign port %d to uid %d: %w", port, uid, err)
	}
	return nil
}

// Release takes port back once its instance is gone.
func (t *Tracker) Release(port int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ports != nil {
		t.ports.Delete(uint32(port))
	}
}

// Offsets in struct bpf_sock_addr, and the programs' results.
const (
	offIP4      = 4
	offIP6      = 8 // four 32-bit words
	offPort     = 24
	keySlot     = -4 // stack slot of the map key
	allowResult = 1
	denyResult  = 0
)

// Addresses as the 32-bit words of struct bpf_sock_addr hold them (network
// byte order), loaded on a little-endian machine; Paddock's builds target
// amd64 and arm64, both little-endian.
const (
	loopback4  = 0x0100007f // 127.0.0.1
	ip6One     = 0x01000000 // the last word of ::1
	ip6MappedW = -0x10000   // 0xffff0000 as an int32: the third word of ::ffff:a.b.c.d
)

// program builds one fence program: it finds who the port belongs to and
// jumps to "own" (the caller's user), "other" (another user's) or "free"
// (no instance's), which tail provides.
func program(m *ebpf.Map, tail func() asm.Instructions) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, offPort, asm.Word),
		asm.HostTo(asm.BE, asm.R7, asm.Half), // network to host order
		asm.StoreMem(asm.RFP, keySlot, asm.R7, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, keySlot),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "free"),
		asm.LoadMem(asm.R8, asm.R0, 0, asm.Word),
		asm.FnGetCurrentUidGid.Call(), // gid<<32 | uid
		asm.JEq.Reg32(asm.R0, asm.R8, "own"),
		asm.Ja.Label("other"),
	}
	return append(insns, tail()...)
}

func ret(label string, v int32) asm.Instructions {
	return asm.Instructions{asm.Mov.Imm(asm.R0, v).WithSymbol(label), asm.Return()}
}

// inRange denies a port in the instance range (R7) and allows the rest.
func inRange(label string) asm.Instructions {
	return asm.Instructions{
		asm.JLT.Imm(asm.R7, PortLow, "allow").WithSymbol(label),
		asm.JGE.Imm(asm.R7, PortHigh, "allow"),
		asm.Ja.Label("deny"),
	}
}

func bind4() asm.Instructions {
	insns := inRange("free")
	insns = append(insns,
		asm.Ja.Label("deny").WithSymbol("other"),
		// own: on loopback, whatever was asked
		asm.LoadMem(asm.R3, asm.R6, offIP4, asm.Word).WithSymbol("own"),
		asm.And.Imm32(asm.R3, 0xff), // the address's first byte
		asm.JEq.Imm32(asm.R3, 127, "allow"),
		asm.StoreImm(asm.R6, offIP4, loopback4, asm.Word),
	)
	insns = append(insns, ret("allow", allowResult)...)
	return append(insns, ret("deny", denyResult)...)
}

func bind6() asm.Instructions {
	insns := inRange("free")
	insns = append(insns,
		asm.Ja.Label("deny").WithSymbol("other"),
		// own: keep ::1 and ::ffff:127.x.y.z, bind anything else on loopback
		asm.LoadMem(asm.R3, asm.R6, offIP6, asm.Word).WithSymbol("own"),
		asm.LoadMem(asm.R4, asm.R6, offIP6+4, asm.Word),
		asm.Or.Reg32(asm.R3, asm.R4),
		asm.JNE.Imm32(asm.R3, 0, "rewrite"),
		asm.LoadMem(asm.R4, asm.R6, offIP6+8, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, offIP6+12, asm.Word),
		asm.JEq.Imm32(asm.R4, ip6MappedW, "mapped"),
		asm.JNE.Imm32(asm.R4, 0, "rewrite"),
		asm.JEq.Imm32(asm.R3, ip6One, "allow"),
		asm.Ja.Label("rewrite"),
		asm.And.Imm32(asm.R3, 0xff).WithSymbol("mapped"),
		asm.JEq.Imm32(asm.R3, 127, "allow"),
		// rewrite: ::ffff:127.0.0.1, which takes the router's IPv4
		// connections on a dual-stack socket (the kernel refuses it to an
		// IPv6-only one, whose option no program of this kind can read)
		asm.StoreImm(asm.R6, offIP6, 0, asm.Word).WithSymbol("rewrite"),
		asm.StoreImm(asm.R6, offIP6+4, 0, asm.Word),
		asm.StoreImm(asm.R6, offIP6+8, ip6MappedW, asm.Word),
		asm.StoreImm(asm.R6, offIP6+12, loopback4, asm.Word),
	)
	insns = append(insns, ret("allow", allowResult)...)
	return append(insns, ret("deny", denyResult)...)
}

// reach4 refuses to reach another app's instance port on this machine.
func reach4() asm.Instructions {
	insns := asm.Instructions{
		asm.Ja.Label("allow").WithSymbol("free"),
		asm.Ja.Label("allow").WithSymbol("own"),
		asm.LoadMem(asm.R3, asm.R6, offIP4, asm.Word).WithSymbol("other"),
		asm.JEq.Imm32(asm.R3, 0, "deny"), // 0.0.0.0
		asm.And.Imm32(asm.R3, 0xff),
		asm.JEq.Imm32(asm.R3, 127, "deny"),
	}
	insns = append(insns, ret("allow", allowResult)...)
	return append(insns, ret("deny", denyResult)...)
}

func reach6() asm.Instructions {
	insns := asm.Instructions{
		asm.Ja.Label("allow").WithSymbol("free"),
		asm.Ja.Label("allow").WithSymbol("own"),
		asm.LoadMem(asm.R3, asm.R6, offIP6, asm.Word).WithSymbol("other"),
		asm.LoadMem(asm.R4, asm.R6, offIP6+4, asm.Word),
		asm.Or.Reg32(asm.R3, asm.R4),
		asm.JNE.Imm32(asm.R3, 0, "allow"),
		asm.LoadMem(asm.R4, asm.R6, offIP6+8, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, offIP6+12, asm.Word),
		asm.JEq.Imm32(asm.R4, ip6MappedW, "mapped"),
		asm.JNE.Imm32(asm.R4, 0, "allow"),
		asm.JEq.Imm32(asm.R3, 0, "deny"), // ::
		asm.JEq.Imm32(asm.R3, ip6One, "deny"),
		asm.Ja.Label("allow"),
		// ::ffff:0.0.0.0 and ::ffff:127.0.0.0/104
		asm.JEq.Imm32(asm.R3, 0, "deny").WithSymbol("mapped"),
		asm.And.Imm32(asm.R3, 0xff),
		asm.JEq.Imm32(asm.R3, 127, "deny"),
	}
	insns = append(insns, ret("allow", allowResult)...)
	return append(insns, ret("deny", denyResult)...)
}
