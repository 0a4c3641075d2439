#include "cli/flags.h"

namespace dvpn::cli {

CLI::Option* AddLogLevel(CLI::App& app, std::string& level) {
  return app.add_option("--log-level", level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
}

void AddAccountKeyFlags(CLI::App& app, std::string& hex, std::string& key_file,
                        std::string& keystore, std::string_view whose, std::string_view when_none) {
  const std::string who(whose);
  app.add_option("--identity-key-hex", hex,
                 "refused: a secret on the command line is readable by every local user");
  app.add_option("--identity-key-file", key_file,
                 "file holding the " + who +
                     " secret key, 64 hex digits, mode 0600 (or $DVPN_IDENTITY_KEY_HEX, or "
                     "--keystore)" +
                     std::string(when_none));
  app.add_option("--keystore", keystore,
                 who + " keystore file, as dvpnctl writes it (passphrase from $DVPN_PASSPHRASE)");
}

void AddSocksFlags(CLI::App& app, std::string& listen, std::string& port_file, std::string& user,
                   std::string& password_file, std::string_view user_note) {
  app.add_option("--socks", listen, "HOST:PORT of the SOCKS5 server (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--socks-port-file", port_file,
                 "write the SOCKS port to this file once listening");
  app.add_option("--socks-user", user,
                 "require SOCKS5 username/password authentication (RFC 1929) with this user "
                 "name; the password comes from --socks-password-file or $DVPN_SOCKS_PASSWORD" +
                     std::string(user_note));
  app.add_option("--socks-password-file", password_file,
                 "file whose first line is the SOCKS password (with --socks-user)");
}

}  // namespace dvpn::cli
