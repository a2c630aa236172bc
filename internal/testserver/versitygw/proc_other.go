//go:build !linux

package versitygw

import "syscall"

// sysProcAttr adds nothing where the kernel cannot kill the server with
// the test process.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
