"""One settings object for the node: defaults < TOML file < ``WBDWI_*`` environment < flags.

=============  ===============================================================
module         what it holds
=============  ===============================================================
``values``     value types checked where they enter: AE titles, destinations,
               the enumerated choices
``model``      :class:`Settings` and its sections, frozen dataclasses that
               validate themselves; each field documents itself in its
               ``metadata`` (:func:`processing.settings.doc`)
``loader``     :func:`load_settings`: TOML file, environment and flag layers,
               coercion of each value to its field's type
``flags``      the declared table of command-line flags that set settings
``docs``       the settings reference and the example TOML file, generated
               from the model and the flag table (``python -m service.settings``)
=============  ===============================================================

File layout (every section and key optional)::

    [node]
    ae_title = "WBDWI"
    port = 11112

    [receive]
    calling_ae_allow = ["SCANNER1", "SCANNER2"]

    [completion]
    quiet_seconds = 60

    [[calling_ae]]            # per scanner; repeatable
    ae_title = "SCANNER1"
    quiet_seconds = 30
    series_include = ["*DWI*", "*diffusion*"]
    expected_stations = 5     # fewer: held, then processed with the verdict saying so

    [export]
    destinations = ["PACS@pacs.example.org:104"]

    [processing]              # fields of processing.settings.ProcessingSettings
    adc_min_b = 50

    [tls]                     # DICOM TLS (PS3.15 B.1), PEM files
    certificate = "/etc/wbdwi/node.crt"
    private_key = "/etc/wbdwi/node.key"
    ca_bundle = "/etc/wbdwi/hospital-ca.pem"
    listener = true

    [priors]                  # comparison with earlier exams (docs/response.md)
    pacs = "PACS@pacs.example.org:104"

    [retention]               # removal after delivery (docs/service.md)
    spool_days = 30

Environment variables are ``WBDWI_<SECTION>_<KEY>`` in upper case, for example
``WBDWI_NODE_PORT=104`` or ``WBDWI_EXPORT_DESTINATIONS=PACS@pacs:104,AI@ai:11112``
(lists are comma-separated). ``WBDWI_CONFIG`` names the TOML file when no
``--config`` flag is given. Per-calling-AE tables are set in the file only.
"""

from service.errors import SettingsError
from service.settings.loader import (
    CONFIG_ENV,
    ENV_PREFIX,
    load_settings,
    processing_settings_from_mapping,
    processing_settings_to_mapping,
)
from service.settings.model import (
    CallingAeSettings,
    CompletionSettings,
    ExportSettings,
    LoggingSettings,
    NodeSettings,
    PriorsSettings,
    ReceiveSettings,
    RetentionSettings,
    Settings,
    TlsSettings,
)
from service.settings.values import (
    LOG_LEVELS,
    Destination,
    LogFormat,
    OtherStoragePolicy,
    parse_destination,
    validate_ae_title,
)

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "LOG_LEVELS",
    "CallingAeSettings",
    "CompletionSettings",
    "Destination",
    "ExportSettings",
    "LogFormat",
    "LoggingSettings",
    "NodeSettings",
    "OtherStoragePolicy",
    "PriorsSettings",
    "ReceiveSettings",
    "RetentionSettings",
    "Settings",
    "SettingsError",
    "TlsSettings",
    "load_settings",
    "parse_destination",
    "processing_settings_from_mapping",
    "processing_settings_to_mapping",
    "validate_ae_title",
]
