#!/usr/bin/env python3
"""Captures real IP packets from the Linux stack for tests/tunnel/ip/ip_packet_test.cpp.

Run as root (or under `unshare -rn`, which gives a private network namespace):
    unshare -rn python3 tests/tunnel/ip/capture_ip_packets.py
It creates a TUN device (no packet-info header, as the data plane opens it) in the namespace,
gives it 10.9.0.1/24 and fd00:9::1/64, makes the kernel send one packet of each kind towards the
device's peer addresses and prints each packet as read from the device, in hex. A TUN device
without offloads hands out packets with complete checksums.
"""
import fcntl
import os
import select
import socket
import struct
import subprocess

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000


def sh(*args):
    subprocess.run(args, check=True)


def main():
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"cap0", IFF_TUN | IFF_NO_PI))
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "set", "cap0", "up")
    sh("ip", "addr", "add", "10.9.0.1/24", "dev", "cap0")
    sh("ip", "-6", "addr", "add", "fd00:9::1/64", "dev", "cap0", "nodad")

    def read_matching(pred):
        while True:
            r, _, _ = select.select([fd], [], [], 2.0)
            if not r:
                raise SystemExit("no packet")
            p = os.read(fd, 65536)
            if pred(p):
                return p

    def udp(family, src, dst, data):
        u = socket.socket(family, socket.SOCK_DGRAM)
        u.bind(src)
        u.sendto(data, dst)
        return u

    def syn(family, src, dst):
        t = socket.socket(family, socket.SOCK_STREAM)
        t.setblocking(False)
        t.bind(src)
        t.connect_ex(dst)
        return t

    def with_checksum(message):  # RFC 1071, for the ICMPv4 echo (ICMPv6's is the kernel's)
        s = 0
        for i in range(0, len(message), 2):
            s += message[i] << 8 | message[i + 1]
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        return message[:2] + struct.pack("!H", ~s & 0xFFFF) + message[4:]

    out = {}
    keep = []  # sockets stay open until every packet is read
    v4, v6 = socket.AF_INET, socket.AF_INET6
    keep.append(udp(v4, ("10.9.0.1", 40000), ("10.9.0.2", 5353), b"hello, exit"))
    out["udp4"] = read_matching(lambda p: p[0] >> 4 == 4 and p[9] == 17)
    keep.append(syn(v4, ("10.9.0.1", 40001), ("10.9.0.2", 443)))
    out["tcp4_syn"] = read_matching(lambda p: p[0] >> 4 == 4 and p[9] == 6)
    icmp = socket.socket(v4, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    icmp.sendto(with_checksum(struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + b"ping-data-0123456789"),
                ("10.9.0.2", 0))
    out["icmp4_echo"] = read_matching(lambda p: p[0] >> 4 == 4 and p[9] == 1)

    keep.append(udp(v6, ("fd00:9::1", 40002), ("fd00:9::2", 5353), b"hello, exit v6"))
    out["udp6"] = read_matching(lambda p: p[0] >> 4 == 6 and p[6] == 17)
    keep.append(syn(v6, ("fd00:9::1", 40003), ("fd00:9::2", 443)))
    out["tcp6_syn"] = read_matching(lambda p: p[0] >> 4 == 6 and p[6] == 6)
    # ICMPv6 raw sockets get their checksum from the kernel (RFC 3542).
    i6 = socket.socket(v6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    i6.sendto(struct.pack("!BBHHH", 128, 0, 0, 0x4321, 7) + b"ping6-data", ("fd00:9::2", 0))
    out["icmp6_echo"] = read_matching(lambda p: p[0] >> 4 == 6 and p[6] == 58 and p[40] == 128)

    for name, p in out.items():
        print(f"{name} = {p.hex()}")


if __name__ == "__main__":
    main()
