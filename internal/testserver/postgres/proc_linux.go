package postgres

import "syscall"

// sysProcAttr makes the kernel kill the server if the test process dies
// without running its cleanups (a test timeout's panic, say), and runs it
// as uid:gid when asUser is set (PostgreSQL refuses to run as root).
func sysProcAttr(asUser bool, uid, gid uint32) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if asUser {
		a.Credential = &syscall.Credential{Uid: uid, Gid: gid, NoSetGroups: true}
	}
	return a
}
