package isolate

import (
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// The ports instances listen on (their $PORT), from PortLow to PortHigh-1:
// below Linux's ephemeral ports (32768 and up by default), so that no
// outgoing connection can hold one an instance is about to bind.
const (
	PortLow  = 20000
	PortHigh = 30000
)

// Fence keeps apps from reaching instances but through the router: it
// attaches eBPF programs to the platform's cgroup, so they apply to every
// process of every app, builds included, and to nothing else on the
// machine (the router and the health checks run outside it).
//
//   - connect (IPv4 and IPv6, TCP and UDP) to an instance port on this
//     machine (127.0.0.0/8, 0.0.0.0, ::1, ::, and their IPv4-mapped forms)
//     fails with EPERM: an app cannot reach another app's instance, nor
//     send it forged X-Forwarded-For, except through the router;
//   - a bind of an instance port to every address (0.0.0.0 or ::) binds
//     127.0.0.1 instead, so that no instance is reachable from the network
//     but through the router either.
//
// The programs stay attached while the cgroup exists, across restarts of
// the server; a later Fence replaces them.
func (t *Tracker) Fence() error {
	dir, err := os.Open(t.dir)
	if err != nil {
		return fmt.Errorf("fence apps: %w", err)
	}
	defer dir.Close()
	for _, p := range []struct {
		attach ebpf.AttachType
		insns  asm.Instructions
	}{
		{ebpf.AttachCGroupInet4Connect, connect4()},
		{ebpf.AttachCGroupInet6Connect, connect6()},
		{ebpf.AttachCGroupInet4Bind, bind4()},
		{ebpf.AttachCGroupInet6Bind, bind6()},
	} {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name: "paddock_fence", Type: ebpf.CGroupSockAddr, AttachType: p.attach,
			Instructions: p.insns, License: "Apache-2.0",
		})
		if err != nil {
			return fmt.Errorf("fence apps: load %s program: %w", p.attach, err)
		}
		err = link.RawAttachProgram(link.RawAttachProgramOptions{Target: int(dir.Fd()), Program: prog, Attach: p.attach})
		prog.Close() // the cgroup holds it now
		if err != nil {
			return fmt.Errorf("fence apps: attach %s program to %s: %w", p.attach, t.dir, err)
		}
	}
	return nil
}

// Offsets in struct bpf_sock_addr.
const (
	offIP4  = 4
	offIP6  = 8 // four 32-bit words
	offPort = 24
)

// Addresses as the 32-bit words of struct bpf_sock_addr hold them (network
// byte order), loaded on a little-endian machine.
const (
	loopback4  = 0x0100007f // 127.0.0.1
	ip6One     = 0x01000000 // the last word of ::1
	ip6MappedW = -0x10000   // 0xffff0000 as an int32: the third word of ::ffff:a.b.c.d
)

// instancePort jumps to label unless the port the program sees is an
// instance port.
func instancePort(label string) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, offPort, asm.Word),
		asm.HostTo(asm.BE, asm.R2, asm.Half), // network to host order
		asm.JLT.Imm(asm.R2, PortLow, label),
		asm.JGE.Imm(asm.R2, PortHigh, label),
	}
}

// ret returns allow (1) or deny (0) under a label.
func ret(label string, v int32) asm.Instructions {
	return asm.Instructions{asm.Mov.Imm(asm.R0, v).WithSymbol(label), asm.Return()}
}

func connect4() asm.Instructions {
	insns := instancePort("allow")
	insns = append(insns,
		asm.LoadMem(asm.R3, asm.R6, offIP4, asm.Word),
		asm.JEq.Imm32(asm.R3, 0, "deny"), // 0.0.0.0
		asm.And.Imm(asm.R3, 0xff),        // the address's first byte
		asm.JEq.Imm32(asm.R3, 127, "deny"),
	)
	insns = append(insns, ret("allow", 1)...)
	return append(insns, ret("deny", 0)...)
}

func connect6() asm.Instructions {
	insns := instancePort("allow")
	insns = append(insns,
		asm.LoadMem(asm.R3, asm.R6, offIP6, asm.Word),
		asm.JNE.Imm32(asm.R3, 0, "allow"),
		asm.LoadMem(asm.R3, asm.R6, offIP6+4, asm.Word),
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
		asm.And.Imm(asm.R3, 0xff),
		asm.JEq.Imm32(asm.R3, 127, "deny"),
	)
	insns = append(insns, ret("allow", 1)...)
	return append(insns, ret("deny", 0)...)
}

// bind4 binds an instance port on 0.0.0.0 to 127.0.0.1 instead.
func bind4() asm.Instructions {
	insns := instancePort("allow")
	insns = append(insns,
		asm.LoadMem(asm.R3, asm.R6, offIP4, asm.Word),
		asm.JNE.Imm32(asm.R3, 0, "allow"),
		asm.StoreImm(asm.R6, offIP4, loopback4, asm.Word),
	)
	return append(insns, ret("allow", 1)...)
}

// bind6 binds an instance port on :: to ::ffff:127.0.0.1 instead, which
// takes IPv4 connections to 127.0.0.1 as the router makes them.
func bind6() asm.Instructions {
	insns := instancePort("allow")
	for w := int16(0); w < 4; w++ {
		insns = append(insns,
			asm.LoadMem(asm.R3, asm.R6, offIP6+4*w, asm.Word),
			asm.JNE.Imm32(asm.R3, 0, "allow"))
	}
	insns = append(insns,
		asm.StoreImm(asm.R6, offIP6+8, ip6MappedW, asm.Word),
		asm.StoreImm(asm.R6, offIP6+12, loopback4, asm.Word),
	)
	return append(insns, ret("allow", 1)...)
}
