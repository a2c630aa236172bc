package berthtest

import "syscall"

// sysProcAttr makes the kernel kill the server if the test process dies
// without running its cleanups (for example on a test timeout panic).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
