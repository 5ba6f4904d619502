-- Each FreeSWITCH node fetches its configuration (mod_xml_curl) with its own
-- credentials: a PBKDF2 hash here, the password in the node's pillar.
ALTER TABLE gopbx.nodes ADD COLUMN xml_curl_password_hash text
    CHECK (xml_curl_password_hash IS NULL OR xml_curl_password_hash LIKE 'pbkdf2_sha256$%');
