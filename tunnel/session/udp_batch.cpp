#include "tunnel/session/udp_batch.h"

#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace dvpn::tunnel::session {

namespace {

constexpr std::pair<const char*, bool PacketOffloads::*> kNames[] = {
    {"tun", &PacketOffloads::tun},
    {"gso", &PacketOffloads::gso},
    {"gro", &PacketOffloads::gro},
    {"mmsg", &PacketOffloads::mmsg},
};

// The kernel gives up a whole send with these when a message's UDP_SEGMENT cannot be served
// (a device or path without GSO, a segment count above its limit).
bool GsoRefused(int err) { return err == EIO || err == EINVAL || err == EOPNOTSUPP; }

// The control message that makes one sendmsg buffer a run of `segment`-byte datagrams.
void PutSegmentSize(msghdr& msg, uint8_t* control, size_t size, size_t segment) {
  msg.msg_control = control;
  msg.msg_controllen = size;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_UDP;
  c->cmsg_type = UDP_SEGMENT;
  c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
  const auto bytes = static_cast<uint16_t>(segment);
  std::memcpy(CMSG_DATA(c), &bytes, sizeof bytes);
}

}  // namespace

std::expected<PacketOffloads, std::string> PacketOffloads::Parse(std::string_view text) {
  if (text == "auto" || text == "all") return PacketOffloads{};
  if (text == "off" || text == "none") return None();
  PacketOffloads out = None();
  for (size_t start = 0;;) {
    const size_t comma = text.find(',', start);
    const std::string_view name =
        text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    bool found = false;
    for (const auto& [n, field] : kNames) {
      if (name == n) {
        out.*field = true;
        found = true;
      }
    }
    if (!found) {
      return std::unexpected("\"" + std::string(name) +
                             "\" is none of auto, off, tun, gso, gro, mmsg");
    }
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string PacketOffloads::ToString() const {
  std::string s;
  for (const auto& [n, field] : kNames) {
    if (this->*field) s += (s.empty() ? "" : ",") + std::string(n);
  }
  return s.empty() ? "off" : s;
}

UdpSendBatch::UdpSendBatch(const asio::any_io_executor& ex, int fd, bool connected,
                           PacketOffloads offloads)
    : ex_(ex),
      alive_(std::make_shared<bool>(true)),
      fd_(fd),
      connected_(connected),
      gso_(offloads.gso),
      mmsg_(offloads.mmsg),
      arena_(kArenaBytes) {}

UdpSendBatch::~UdpSendBatch() = default;

std::span<uint8_t> UdpSendBatch::Prepare(size_t max) {
  max = std::min(max, arena_.size());
  if (used_ + max > arena_.size() || runs_ == kMaxMessages) Flush();
  return std::span<uint8_t>(arena_.data() + used_, max);
}

bool UdpSendBatch::Commit(size_t size, const udp::endpoint& to) {
  if (closed_ || size == 0 || used_ + size > arena_.size()) {
    ++counters_.dropped;
    return false;
  }
  const auto* peer = static_cast<const sockaddr*>(to.data());
  const auto peer_len = static_cast<socklen_t>(connected_ ? 0 : to.size());
  if (runs_ > 0 && gso_) {
    Run& last = run_[runs_ - 1];
    const bool same_peer =
        connected_ || (last.peer_len == peer_len && std::memcmp(&last.peer, peer, peer_len) == 0);
    if (!last.closed && same_peer && size <= last.segment && last.count < kMaxRunSegments &&
        last.bytes + size <= kMaxRunBytes) {
      last.bytes += size;
      ++last.count;
      last.closed = size < last.segment;
      used_ += size;
      return true;
    }
  }
  if (runs_ == kMaxMessages) {  // Prepare flushed; only a Commit without Prepare gets here
    ++counters_.dropped;
    return false;
  }
  if (!flush_posted_) {
    flush_posted_ = true;
    asio::post(ex_, [this, alive = std::weak_ptr<bool>(alive_)] {
      if (alive.expired()) return;
      flush_posted_ = false;
      Flush();
    });
  }
  Run& run = run_[runs_++];
  run.offset = used_;
  run.bytes = run.segment = size;
  run.count = 1;
  run.closed = false;
  run.peer_len = peer_len;
  if (peer_len > 0) std::memcpy(&run.peer, peer, std::min<size_t>(peer_len, sizeof run.peer));
  used_ += size;
  return true;
}

void UdpSendBatch::Flush() {
  if (runs_ > 0 && !closed_) SendRuns(0);
  runs_ = 0;
  used_ = 0;
}

// One run: as one GSO message, or datagram by datagram.
bool UdpSendBatch::SendOne(size_t index, bool as_gso) {
  Run& run = run_[index];
  alignas(cmsghdr) uint8_t control[CMSG_SPACE(sizeof(uint16_t))] = {};
  iovec iov{};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!connected_) {
    msg.msg_name = &run.peer;
    msg.msg_namelen = run.peer_len;
  }
  if (as_gso && run.count > 1) {
    iov = {arena_.data() + run.offset, run.bytes};
    PutSegmentSize(msg, control, sizeof control, run.segment);
    ++counters_.calls;
    if (::sendmsg(fd_, &msg, MSG_DONTWAIT) >= 0) {
      counters_.datagrams += run.count;
      ++counters_.gso_runs;
      return true;
    }
    if (!GsoRefused(errno)) {
      counters_.dropped += run.count;
      return false;
    }
    gso_ = false;  // this socket's path cannot segment: plain datagrams from now on
    msg.msg_control = nullptr;
    msg.msg_controllen = 0;
  }
  bool all = true;
  for (size_t off = 0, i = 0; i < run.count; ++i, off += run.segment) {
    iov = {arena_.data() + run.offset + off, std::min(run.segment, run.bytes - off)};
    ++counters_.calls;
    if (::sendmsg(fd_, &msg, MSG_DONTWAIT) >= 0) {
      ++counters_.datagrams;
    } else {
      ++counters_.dropped;
      all = false;
    }
  }
  return all;
}

void UdpSendBatch::SendRuns(size_t from) {
  if (!mmsg_) {
    for (size_t i = from; i < runs_; ++i) SendOne(i, gso_);
    return;
  }
  std::array<mmsghdr, kMaxMessages> msgs{};
  std::array<iovec, kMaxMessages> iovs{};
  alignas(cmsghdr) std::array<std::array<uint8_t, CMSG_SPACE(sizeof(uint16_t))>, kMaxMessages>
      controls{};
  for (size_t i = from; i < runs_; ++i) {
    Run& run = run_[i];
    iovs[i] = {arena_.data() + run.offset, run.bytes};
    msghdr& m = msgs[i].msg_hdr;
    m.msg_iov = &iovs[i];
    m.msg_iovlen = 1;
    if (!connected_) {
      m.msg_name = &run.peer;
      m.msg_namelen = run.peer_len;
    }
    if (run.count > 1) {
      if (!gso_) continue;  // queued while GSO was on; sent one by one below
      PutSegmentSize(m, controls[i].data(), controls[i].size(), run.segment);
    }
  }
  // Each pass sends a prefix, or fails on its first message, which is then settled alone:
  // at most runs_ passes.
  size_t i = from;
  while (i < runs_) {
    if (run_[i].count > 1 && !gso_) {
      SendOne(i, false);
      ++i;
      continue;
    }
    size_t n = i + 1;  // a prefix of messages sendmmsg can take as they are
    while (n < runs_ && !(run_[n].count > 1 && !gso_)) ++n;
    ++counters_.calls;
    const int sent = ::sendmmsg(fd_, &msgs[i], static_cast<unsigned>(n - i), MSG_DONTWAIT);
    if (sent > 0) {
      for (int k = 0; k < sent; ++k) {
        counters_.datagrams += run_[i + k].count;
        if (run_[i + k].count > 1) ++counters_.gso_runs;
      }
      i += static_cast<size_t>(sent);
      continue;
    }
    const int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) {
      for (; i < runs_; ++i) counters_.dropped += run_[i].count;  // the buffer is full
      return;
    }
    if (run_[i].count > 1 && GsoRefused(err)) {
      gso_ = false;
      SendOne(i, false);
    } else {
      counters_.dropped += run_[i].count;  // this peer refused (unreachable, ...)
    }
    ++i;
  }
}

UdpReceiveBatch::UdpReceiveBatch(int fd, PacketOffloads offloads, size_t max_datagram)
    : fd_(fd), gro_(offloads.gro), mmsg_(offloads.mmsg) {
  if (gro_) {
    const int one = 1;
    gro_ = ::setsockopt(fd_, SOL_UDP, UDP_GRO, &one, sizeof one) == 0;
  }
  batch_ = mmsg_ ? kMessages : 1;
  // A GRO burst is at most one IP packet's payload.
  buffer_size_ = gro_ ? 65536 : std::max<size_t>(max_datagram, 1);
  storage_.resize(batch_ * buffer_size_);
  for (size_t i = 0; i < batch_; ++i) message_[i].buffer = storage_.data() + i * buffer_size_;
}

int UdpReceiveBatch::Receive() {
  std::array<mmsghdr, kMessages> msgs{};
  std::array<iovec, kMessages> iovs{};
  for (size_t i = 0; i < batch_; ++i) {
    iovs[i] = {message_[i].buffer, buffer_size_};
    msghdr& m = msgs[i].msg_hdr;
    m.msg_iov = &iovs[i];
    m.msg_iovlen = 1;
    m.msg_name = &from_[i];
    m.msg_namelen = sizeof from_[i];
    if (gro_) {
      m.msg_control = control_[i].data();
      m.msg_controllen = control_[i].size();
    }
  }
  ++calls_;
  int n = 0;
  if (mmsg_) {
    n = ::recvmmsg(fd_, msgs.data(), static_cast<unsigned>(batch_), MSG_DONTWAIT, nullptr);
  } else {
    const ssize_t r = ::recvmsg(fd_, &msgs[0].msg_hdr, MSG_DONTWAIT);
    if (r >= 0) {
      msgs[0].msg_len = static_cast<unsigned>(r);
      n = 1;
    } else {
      n = -1;
    }
  }
  if (n <= 0) return 0;
  for (int i = 0; i < n; ++i) {
    Message& out = message_[i];
    const msghdr& m = msgs[i].msg_hdr;
    out.length = (m.msg_flags & MSG_TRUNC) ? 0 : msgs[i].msg_len;  // cut: dropped whole
    out.segment = 0;
    if (!gro_) continue;
    for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr;
         c = CMSG_NXTHDR(const_cast<msghdr*>(&m), c)) {
      if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
        int segment = 0;
        std::memcpy(&segment, CMSG_DATA(c), sizeof segment);
        if (segment > 0 && static_cast<size_t>(segment) < out.length) {
          out.segment = static_cast<size_t>(segment);
        }
      }
    }
  }
  return n;
}

void UdpReceiveBatch::FromSockaddr(int m, udp::endpoint& from) const {
  const auto& ss = from_[m];
  const size_t len = ss.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  std::memcpy(from.data(), &ss, len);
  from.resize(len);
}

}  // namespace dvpn::tunnel::session
