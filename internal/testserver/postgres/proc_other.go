//go:build !linux

package postgres

import "syscall"

// sysProcAttr adds nothing where the kernel cannot kill the server with
// the test process; the server runs as the test's user (root is refused
// by PostgreSQL itself, outside Linux).
func sysProcAttr(bool, uint32, uint32) *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
