package versitygw

import "syscall"

// sysProcAttr makes the kernel kill the server if the test process dies
// without running its cleanups (a test timeout's panic, say).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
