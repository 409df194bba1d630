"""b24-nps common library: settings, logging, events, topology, database, Bitrix24 client."""
