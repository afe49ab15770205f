// Package lab stands in for the EC2 VMs of an ha-aws cluster with real
// Linux hosts on this machine, for tests built with the "lab" tag.
//
// Each running instance of the AWS emulator (moto, on 127.0.0.1) becomes a
// host: a Debian bookworm root (built once by EnsureBase and cached) under
// a real systemd in systemd-nspawn, with its own network namespace on a
// bridge that plays the VPC. The host gets its instance's user-data and
// key pair through cloud-init's NoCloud datasource, so the SSH host key
// kforge put in the user-data and the "ubuntu" login work as on EC2. A
// real OpenSSH server inside the lab's network namespace is the jump host;
// the lab forwards 127.0.0.1:<port> to it, so kforge, running outside the
// lab, reaches every host with --ssh-jump and never dials an address the
// emulator handed out.
//
// Everything but this comment needs the build tag "lab" (and root): the
// default test suite compiles this package to nothing. See README.md.
package lab
